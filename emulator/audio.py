"""Turn a connection's audio bytes into 16 kHz mono ``pcm_s16le`` for the recognizer.

A push decoder (``feed(bytes) -> pcm``, ``flush() -> pcm``) over
:mod:`workers.transcode`: ``encoding=auto`` decodes the container detected at the
start of the stream (protocol page, "Client to server": every connection must
start with the header); ``pcm_s16le``/``mulaw``/``alaw`` use the
``sample_rate``/``channels`` query parameters, then are downmixed and resampled
here. Errors surface as :class:`workers.errors.DecodeError`.
"""

from __future__ import annotations

from typing import Protocol

import av
import numpy as np

from schemas.wire import StreamParams
from workers.errors import DecodeError
from workers.frames import FrameAligner

__all__ = ["TARGET_CHANNELS", "TARGET_RATE", "AudioInput", "bytes_to_ms"]

TARGET_RATE = 16000
TARGET_CHANNELS = 1
_BYTES_PER_MS = TARGET_RATE * 2 // 1000  # 16-bit mono
SNIFF_BYTES = 12  # enough for workers.transcode.sniff_container


def bytes_to_ms(nbytes: int) -> int:
    """Duration in ms of ``nbytes`` of 16 kHz mono s16 (floored)."""
    return nbytes // _BYTES_PER_MS


class _Decoder(Protocol):
    def feed(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Resampler:
    """Streaming interleaved s16 -> 16 kHz mono s16 (downmix, then resample)."""

    def __init__(self, sample_rate: int, channels: int) -> None:
        self._rate = sample_rate
        self._channels = channels
        self._frames = FrameAligner(2 * channels)
        self._resampler: av.AudioResampler | None = None
        if sample_rate != TARGET_RATE:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=TARGET_RATE)

    def feed(self, pcm: bytes) -> bytes:
        mono = self._downmix(self._frames.take(pcm))
        if self._resampler is None or not mono:
            return mono
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(mono, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self._rate
        return b"".join(_plane(out) for out in self._resampler.resample(frame))

    def _downmix(self, pcm: bytes) -> bytes:
        if self._channels == 1:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2").reshape(-1, self._channels)
        mixed = samples.astype(np.int32).sum(axis=1) // self._channels
        return bytes(mixed.astype("<i2").tobytes())


def _plane(frame: av.AudioFrame) -> bytes:
    nbytes = int(frame.samples) * 2
    plane: bytes = bytes(frame.planes[0])
    return plane[:nbytes]


class AudioInput:
    """Decode one connection's audio: call :meth:`feed` with every binary frame; it
    returns the 16 kHz mono s16le decodable so far (whole samples).

    There is no flush: a ``flush_request`` does not end the stream on the wire
    (more audio may follow), and ending a container decoder would. Audio a
    decoder still holds (a few ms of codec delay) is therefore only recognized
    once more audio arrives. Raises :class:`~workers.errors.DecodeError` on
    undecodable input; the caller must then close the connection.
    """

    def __init__(self, params: StreamParams) -> None:
        from workers.transcode import ContainerDecoder, RawDecoder

        self._decoder: _Decoder
        self._resampler: _Resampler | None = None
        self._prefix: bytes | None = None  # auto: the stream start, until sniffed
        if params.encoding == "auto":
            self._prefix = b""
            self._decoder = ContainerDecoder(
                target_rate=TARGET_RATE, target_channels=TARGET_CHANNELS
            )
        else:
            self._decoder = RawDecoder(params.encoding, params.sample_rate, params.channels)
            self._resampler = _Resampler(params.sample_rate, params.channels)

    def feed(self, data: bytes) -> bytes:
        """Decode ``data`` (any split of the stream)."""
        if self._prefix is not None:
            self._sniff(data)
        try:
            pcm = bytes(self._decoder.feed(data))
            if self._resampler is not None:
                pcm = self._resampler.feed(pcm)
        except DecodeError:
            raise
        except Exception as exc:  # a foreign decoder error: translate at the boundary
            raise DecodeError(type(exc).__name__) from exc
        return pcm

    def _sniff(self, data: bytes) -> None:
        # `auto` detects the container from the stream start (protocol page,
        # "Query parameters"); refuse early rather than let FFmpeg probe
        # arbitrary bytes for up to 256 KiB.
        from workers.transcode import sniff_container

        assert self._prefix is not None
        self._prefix += data[:SNIFF_BYTES]
        if len(self._prefix) < SNIFF_BYTES:
            return
        if sniff_container(self._prefix) is None:
            raise DecodeError(
                "unknown container (encoding=auto needs WAV, OGG, FLAC, WebM, MP3 or MP4)"
            )
        self._prefix = None

    def close(self) -> None:
        """Release the decoder (call once, when the connection ends)."""
        close = getattr(self._decoder, "close", None)
        if callable(close):
            close()
