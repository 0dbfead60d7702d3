"""Whole frames out of byte chunks cut anywhere (the emulator's own copy of the idea).

Audio arrives split at arbitrary bytes; decoders and recognizers hold back a
partial sample or frame until the rest arrives. No dependencies.
"""

from __future__ import annotations

__all__ = ["FrameAligner"]


class FrameAligner:
    """Returns whole frames of ``frame_bytes`` each, holding back a partial one.

    Call :meth:`take` with every chunk; call :meth:`drain` at the end of a
    stream for the bytes that never completed a frame.
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
        """Return the held partial frame and start afresh."""
        held, self._held = self._held, b""
        return held
