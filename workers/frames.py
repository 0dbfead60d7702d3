"""Frame alignment of byte streams cut anywhere.

Audio arrives in chunks that may end inside a sample or an interleaved frame;
every consumer (raw decoders, upstream streams, channel splitters, the
emulator's recognizers) must hold those bytes back until the rest arrives.
:class:`FrameAligner` is that one piece of state. No dependencies.
"""

from __future__ import annotations


class FrameAligner:
    """Returns whole frames of ``frame_bytes`` each, holding back a partial one.

    Call :meth:`take` with every chunk; what it returns is a multiple of
    ``frame_bytes``. At end of stream, :attr:`held` is what never completed a
    frame; :meth:`drain` returns it and starts afresh.
    """

    __slots__ = ("_held", "frame_bytes")

    def __init__(self, frame_bytes: int) -> None:
        if frame_bytes <= 0:
            raise ValueError("frame_bytes must be positive")
        self.frame_bytes = frame_bytes
        self._held = b""

    def take(self, data: bytes) -> bytes:
        """Whole frames of the held bytes followed by ``data``."""
        if self._held:
            data = self._held + data
        whole = len(data) - len(data) % self.frame_bytes
        self._held = data[whole:]
        return data[:whole]

    @property
    def held(self) -> bytes:
        """Bytes of an incomplete frame waiting for the next :meth:`take`."""
        return self._held

    def drain(self) -> bytes:
        """Return the held bytes and forget them."""
        held, self._held = self._held, b""
        return held
