"""The emulator's own audio decoding: bytes in, 16 kHz mono ``pcm_s16le`` out.

Written against PyAV directly and sharing nothing with the worker's decoder
(STYLE.md: a decoder bug must not show on both sides of a test).

- :class:`AudioInput` decodes one WebSocket connection, push style: call
  :meth:`AudioInput.feed` with every binary frame. ``encoding=auto`` detects
  the container from the first bytes (protocol page: every connection starts
  with the header) and demuxes it on a helper thread that pulls from a
  blocking reader; ``feed`` returns once that thread has used every byte
  given and waits for more, so the output depends only on the bytes so far.
  (FFmpeg's WAV demuxer reads 64 KiB ahead on a stream before its first
  packet: about 2 s of 16 kHz audio; OGG, WebM, MP3, MP4 start within 2-7 KB.)
  ``pcm_s16le``/``mulaw``/``alaw`` use ``sample_rate``/``channels``.
- :func:`decode_file` decodes a whole prerecorded body (seekable, so MP4
  files with the index at the end work too).

Every failure raises :class:`emulator.errors.DecodeError`.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from typing import Protocol

import av
import numpy as np
import numpy.typing as npt

from emulator.errors import DecodeError
from emulator.frames import FrameAligner

__all__ = [
    "SNIFF_BYTES",
    "TARGET_RATE",
    "AudioInput",
    "bytes_to_ms",
    "decode_file",
    "g711_to_s16",
    "sniff",
]

TARGET_RATE = 16000
_BYTES_PER_MS = TARGET_RATE * 2 // 1000  # 16-bit mono
SNIFF_BYTES = 12
WAIT_S = 10.0  # how long feed() waits for the demux thread before giving up
# FFmpeg open options for live input: stop probing after 32 KiB / 0.2 s of
# audio instead of 5 MB / 5 s, and give up on unknown bytes after 256 KiB.
_LIVE_OPTIONS = {"probesize": "32768", "analyzeduration": "200000", "formatprobesize": "262144"}


def bytes_to_ms(nbytes: int) -> int:
    """Duration in ms of ``nbytes`` of 16 kHz mono s16 (floored)."""
    return nbytes // _BYTES_PER_MS


def sniff(prefix: bytes) -> str | None:
    """The container named by a stream's first 12 bytes, or ``None``."""
    if prefix[:4] == b"RIFF" and prefix[8:12] == b"WAVE":
        return "wav"
    if prefix[4:8] == b"ftyp":
        return "mp4"
    for magic, name in _MAGIC:
        if prefix.startswith(magic):
            return name
    if len(prefix) >= 2 and prefix[0] == 0xFF and prefix[1] & 0xE0 == 0xE0:
        return "mp3"  # an MPEG audio frame sync (also ADTS AAC)
    return None


_UNKNOWN = "unknown container (encoding=auto needs WAV, OGG, FLAC, WebM, MP3 or MP4)"
_MAGIC = ((b"OggS", "ogg"), (b"fLaC", "flac"), (b"\x1a\x45\xdf\xa3", "webm"), (b"ID3", "mp3"))


# --------------------------------------------------------------------------- G.711


def _mulaw_table() -> npt.NDArray[np.int16]:
    # ITU-T G.711: complement, then sign / 3-bit exponent / 4-bit mantissa, bias 0x84.
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = ((((code & 0x0F) << 3) + 0x84) << ((code >> 4) & 0x07)) - 0x84
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> npt.NDArray[np.int16]:
    # ITU-T G.711: even bits inverted (xor 0x55); segment 0 is linear.
    code = np.arange(256, dtype=np.int32) ^ 0x55
    mantissa, segment = code & 0x0F, (code >> 4) & 0x07
    linear = np.where(
        segment == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(segment - 1, 0)
    )
    return np.where(code & 0x80, linear, -linear).astype(np.int16)


_G711 = {"mulaw": _mulaw_table(), "alaw": _alaw_table()}


def g711_to_s16(data: bytes, encoding: str) -> bytes:
    """Expand μ-law or A-law bytes to little-endian 16-bit samples."""
    table = _G711[encoding]
    return bytes(table[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes())


# --------------------------------------------------------------------------- raw


class _Mono16k:
    """Interleaved s16 at any rate -> 16 kHz mono s16 (average the channels, then resample)."""

    def __init__(self, sample_rate: int, channels: int) -> None:
        self._rate = sample_rate
        self._channels = channels
        self._frames = FrameAligner(2 * channels)
        self._resampler = (
            av.AudioResampler(format="s16", layout="mono", rate=TARGET_RATE)
            if sample_rate != TARGET_RATE
            else None
        )

    def feed(self, pcm: bytes) -> bytes:
        data = self._frames.take(pcm)
        if not data:
            return b""
        samples = np.frombuffer(data, dtype="<i2").reshape(-1, self._channels)
        mono = samples.mean(axis=1).round().astype("<i2") if self._channels > 1 else samples[:, 0]
        if self._resampler is None:
            return bytes(mono.tobytes())
        frame = av.AudioFrame.from_ndarray(mono.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self._rate
        return b"".join(_pcm(out) for out in self._resampler.resample(frame))

    def flush(self) -> bytes:
        if self._resampler is None:
            return b""
        return b"".join(_pcm(out) for out in self._resampler.resample(None))


class _RawInput:
    """Headerless ``pcm_s16le``/``mulaw``/``alaw`` of a declared rate and channel count."""

    def __init__(self, encoding: str, sample_rate: int, channels: int) -> None:
        self._encoding = encoding
        self._samples = FrameAligner(1 if encoding != "pcm_s16le" else 2)
        self._mono = _Mono16k(sample_rate, channels)

    def feed(self, data: bytes) -> bytes:
        data = self._samples.take(data)
        if self._encoding != "pcm_s16le":
            data = g711_to_s16(data, self._encoding)
        return self._mono.feed(data)

    def flush(self) -> bytes:
        return self._mono.flush()

    def close(self) -> None:
        """Nothing to release."""


def _pcm(frame: av.AudioFrame) -> bytes:
    # Planes are padded for alignment: keep only the samples (mono s16 here).
    return bytes(memoryview(frame.planes[0])[: frame.samples * 2])


# --------------------------------------------------------------------------- containers


class _Reader:
    """A blocking, non-seekable file for PyAV: ``read`` waits for bytes from ``push``."""

    def __init__(self, cond: threading.Condition) -> None:
        self._cond = cond
        self._chunks: list[bytes] = []
        self.starving = False  # the reader waits and nothing is queued
        self.eof = False  # no more bytes will come: an empty read ends the stream
        self.closed = False

    def push(self, data: bytes) -> None:
        self._chunks.append(data)
        self.starving = False

    def read(self, size: int = -1) -> bytes:
        with self._cond:
            while not self._chunks and not self.closed and not self.eof:
                self.starving = True
                self._cond.notify_all()
                self._cond.wait()
            if self.closed or not self._chunks:
                return b""
            data = b"".join(self._chunks)
            cut = len(data) if size < 0 else size
            rest = data[cut:]
            self._chunks = [rest] if rest else []
            return data[:cut]


class _ContainerInput:
    """A container stream (WAV, OGG, FLAC, WebM, MP3, fragmented MP4) cut anywhere."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._reader = _Reader(self._cond)
        self._out: list[bytes] = []
        self._error: DecodeError | None = None
        self._done = False
        self._thread = threading.Thread(target=self._run, name="emulator-demux", daemon=True)
        self._thread.start()

    def feed(self, data: bytes) -> bytes:
        with self._cond:
            if data:
                self._reader.push(data)
                self._cond.notify_all()
            ready = self._cond.wait_for(self._settled, WAIT_S)
            return self._take(ready)

    def flush(self) -> bytes:
        with self._cond:
            self._reader.eof = True
            self._cond.notify_all()
            return self._take(self._cond.wait_for(lambda: self._done, WAIT_S))

    def close(self) -> None:
        with self._cond:
            self._reader.closed = True
            self._cond.notify_all()

    def _settled(self) -> bool:
        return self._done or self._reader.starving

    def _take(self, ready: bool) -> bytes:
        if self._error is not None:
            raise self._error
        if not ready:
            raise DecodeError(f"the demuxer made no progress in {WAIT_S:.0f} s")
        out, self._out = b"".join(self._out), []
        return out

    def _run(self) -> None:
        try:
            with av.open(self._reader, mode="r", options=_LIVE_OPTIONS, buffer_size=4096) as box:
                for pcm in _decode_box(box):
                    with self._cond:
                        self._out.append(pcm)
        except av.FFmpegError as exc:
            self._fail(f"cannot decode audio: {exc.strerror or type(exc).__name__}")
        except DecodeError as exc:
            self._fail(exc.detail)
        except Exception as exc:  # a surprise from FFmpeg must end the stream, not hang it
            self._fail(f"cannot decode audio: {type(exc).__name__}")
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _fail(self, detail: str) -> None:
        with self._cond:
            if not self._reader.closed:
                self._error = DecodeError(detail)


def _decode_box(box: av.container.InputContainer) -> Iterator[bytes]:
    """16 kHz mono PCM of the first audio stream, chunk by chunk."""
    if not box.streams.audio:
        raise DecodeError(f"no audio stream in the {box.format.name} input")
    stream = box.streams.audio[0]
    resampler = av.AudioResampler(format="s16", layout="mono", rate=TARGET_RATE)
    for packet in box.demux(stream):
        for frame in packet.decode():
            yield b"".join(_pcm(out) for out in resampler.resample(frame))
    yield b"".join(_pcm(out) for out in resampler.resample(None))


# --------------------------------------------------------------------------- public


class _Decoder(Protocol):
    def feed(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...

    def close(self) -> None: ...


class AudioInput:
    """Decode one connection's audio: :meth:`feed` every binary frame, in order.

    ``encoding`` is ``auto`` or a raw encoding with ``sample_rate`` and
    ``channels``. There is no flush on the wire (a ``flush_request`` does not
    end the stream), so a few ms a codec holds back wait for the next frame.
    Raises :class:`~emulator.errors.DecodeError`: close the connection (1007).
    Call :meth:`close` once the connection has ended.
    """

    def __init__(self, encoding: str, sample_rate: int = TARGET_RATE, channels: int = 1) -> None:
        self._prefix: bytes | None = b"" if encoding == "auto" else None
        self._decoder: _Decoder = (
            _ContainerInput() if encoding == "auto" else _RawInput(encoding, sample_rate, channels)
        )

    def feed(self, data: bytes) -> bytes:
        """16 kHz mono s16le decodable from the stream so far (whole samples)."""
        if self._prefix is not None:
            self._sniff(data)
        try:
            return self._decoder.feed(data)
        except DecodeError:
            raise
        except Exception as exc:  # av / numpy surprises, translated at the boundary
            raise DecodeError(f"cannot decode audio: {type(exc).__name__}") from exc

    def finish(self) -> bytes:
        """End of input (not a wire event: for whole files and tests): the tail."""
        try:
            return self._decoder.flush()
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(f"cannot decode audio: {type(exc).__name__}") from exc

    def close(self) -> None:
        """Release the decoder (idempotent)."""
        self._decoder.close()

    def _sniff(self, data: bytes) -> None:
        # Refuse unknown bytes at once rather than let FFmpeg probe 256 KiB of them.
        assert self._prefix is not None
        self._prefix += data[: SNIFF_BYTES - len(self._prefix)]
        if len(self._prefix) < SNIFF_BYTES:
            return
        if sniff(self._prefix) is None:
            raise DecodeError(
                "unknown container (encoding=auto needs WAV, OGG, FLAC, WebM, MP3 or MP4)"
            )
        self._prefix = None


def decode_file(
    body: bytes, encoding: str, sample_rate: int = TARGET_RATE, channels: int = 1
) -> bytes:
    """A whole prerecorded body as 16 kHz mono s16le; raises :class:`DecodeError`.

    ``encoding`` ``auto`` or a container name (``m4a``, ``mp4``, ``mov``...)
    is demuxed from memory (seekable: MP4 with the index at the end works);
    a raw encoding uses ``sample_rate``/``channels``.
    """
    if encoding in ("pcm_s16le", "mulaw", "alaw"):
        raw = _RawInput(encoding, sample_rate, channels)
        return raw.feed(body) + raw.flush()
    if encoding == "auto" and sniff(body[:SNIFF_BYTES]) is None:
        raise DecodeError(
            "unknown container (encoding=auto needs WAV, OGG, FLAC, WebM, MP3 or MP4)"
        )
    try:
        with av.open(io.BytesIO(body), mode="r") as box:
            return b"".join(_decode_box(box))
    except av.FFmpegError as exc:
        raise DecodeError(f"cannot decode audio: {exc.strerror or type(exc).__name__}") from exc
