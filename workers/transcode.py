"""Push decoders: audio bytes in, interleaved ``pcm_s16le`` out.

Two decoders share one shape, ``feed(bytes) -> pcm`` and ``flush() -> pcm``
(httpx's ``_decoders.py`` style); nothing here imports Kafka or websockets.

- :class:`ContainerDecoder` demuxes and decodes anything FFmpeg reads (WAV,
  OGG/Opus, FLAC, WebM, MP3, fragmented or faststart M4A...) from arbitrary
  byte splits. PyAV only pulls bytes from a file object, so the demuxer runs on
  a private daemon thread that reads from a blocking, non-seekable pipe;
  ``feed`` writes to the pipe and waits until the thread has consumed it all
  and blocks for more ("run until it starves"). The output therefore depends
  only on the bytes given so far, never on how they were split.
  Ogg/Opus (mono or stereo, the usual container of live calls) takes a
  shorter way: ``workers.ogg`` splits the pages into packets and FFmpeg's
  Opus decoder runs on the caller's thread inside :meth:`ContainerDecoder.step`,
  with no thread and no hand-off per record; the samples are the same as the
  demuxer's (pre-skip and end trimming included; tested against it).
- :class:`RawDecoder` handles headerless ``pcm_s16le``/``mulaw``/``alaw``
  (G.711 expanded with numpy lookup tables).

Failover support: a :class:`ContainerDecoder` records :class:`RestartPoint`\\ s
(WAV, OGG, MP3) so a new decoder can restart mid-stream from the container's
header bytes plus the input from ``point.byte`` on.

Every failure to decode raises :class:`workers.errors.DecodeError`, translated
from ``av`` errors with ``raise ... from``.
"""

from __future__ import annotations

import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from workers.errors import DecodeError
from workers.frames import FrameAligner
from workers.ogg import OggPacket, OggReader, opus_samples, page_size
from workers.restart import RestartPoint, Scanner, check_format, scanner_for

__all__ = [
    "RAW_ENCODINGS",
    "ContainerDecoder",
    "RawDecoder",
    "RestartPoint",
    "alaw_to_s16",
    "mulaw_to_s16",
    "sniff_container",
    "split_channels",
]

RAW_ENCODINGS = ("pcm_s16le", "mulaw", "alaw")
"""Encodings passed upstream untouched (the Reson8 ``encoding`` values)."""

DEFAULT_TIMEOUT_S = 10.0
# Output frames (at the target rate) a container may yield per input byte, on
# the whole stream. Real audio stays far below: speech Opus ~20, Opus DTX
# silence ~90, FLAC silence ~250 at 16 kHz (so a long digital silence in FLAC
# is refused); a WAV declaring 1 Hz gives 16,000.
MAX_FRAMES_PER_BYTE = 128.0

# Open options for live input. `probesize`/`analyzeduration` bound how much
# avformat_find_stream_info() reads before the first packet comes out (the
# defaults are 5 MB / 5 s). Format probing needs 2048 bytes (FFmpeg's
# PROBE_BUF_MIN) or end of stream before anything is decoded, and gives up on
# unknown bytes after `formatprobesize` (default 1 MiB); 256 KiB still skips
# an MP3's ID3v2 tag with cover art, which probing steps over.
# Not `fflags=nobuffer`: with it, the packets read while probing are dropped,
# so the output would depend on where the stream was split.
_OPEN_OPTIONS = {
    "probesize": "32768",
    "analyzeduration": "200000",
    "formatprobesize": str(256 * 1024),
}
_READ_SIZE = 32768
# Decoded Opus frames are resampled this many (48 kHz) samples at a time: one
# call per 20 ms packet costs more than the decoding, and FFmpeg's resampler
# keeps buffers as large as the largest frame it was given (a second's worth
# is about 1.5 MiB per session).
_RESAMPLE_BATCH = 4800


# --------------------------------------------------------------------------
# Sniffing and channel helpers


def sniff_container(prefix: bytes) -> str | None:
    """Name the container from the first bytes of a stream, or None if unknown.

    Returns ``wav``, ``ogg``, ``flac``, ``webm`` (any EBML, i.e. also Matroska),
    ``mp3`` or ``mp4``. Give at least 12 bytes; fewer may return None for a
    container that a longer prefix would match.
    """
    checks: tuple[tuple[str, Callable[[bytes], bool]], ...] = (
        ("wav", lambda p: p[:4] in (b"RIFF", b"RIFX", b"RF64") and p[8:12] == b"WAVE"),
        ("ogg", lambda p: p.startswith(b"OggS")),
        ("flac", lambda p: p.startswith(b"fLaC")),
        ("webm", lambda p: p.startswith(b"\x1a\x45\xdf\xa3")),
        ("mp4", lambda p: p[4:8] == b"ftyp"),
        ("mp3", _looks_like_mpeg_audio),
    )
    for name, check in checks:
        if check(prefix):
            return name
    return None


def _looks_like_mpeg_audio(prefix: bytes) -> bool:
    if prefix.startswith(b"ID3"):
        return True
    # MPEG audio frame header: 11-bit sync, a valid version (not 01), a valid
    # layer (not 00), a bitrate index that is neither free (0) nor bad (15),
    # and a sample-rate index that is not reserved (3).
    if len(prefix) < 4 or prefix[0] != 0xFF or prefix[1] & 0xE0 != 0xE0:
        return False
    version, layer = (prefix[1] >> 3) & 3, (prefix[1] >> 1) & 3
    bitrate, rate = prefix[2] >> 4, (prefix[2] >> 2) & 3
    return version != 1 and layer != 0 and bitrate not in (0, 15) and rate != 3


def split_channels(pcm: bytes, channels: int) -> list[bytes]:
    """Split interleaved ``pcm_s16le`` into one mono buffer per channel.

    ``pcm`` must hold whole frames (a multiple of ``2 * channels`` bytes).
    """
    if channels < 1:
        raise ValueError("channels must be >= 1")
    if len(pcm) % (2 * channels):
        raise ValueError(f"{len(pcm)} bytes is not a whole number of {channels}-channel frames")
    if channels == 1:
        return [bytes(pcm)]
    frames = np.frombuffer(pcm, dtype="<i2").reshape(-1, channels)
    return [frames[:, c].tobytes() for c in range(channels)]


# --------------------------------------------------------------------------
# G.711 and raw input


def _mulaw_table() -> npt.NDArray[np.int16]:
    # ITU-T G.711 mu-law expansion: bits are inverted on the wire; the sample
    # is ((mantissa << 3) + 0x84) << exponent, minus the 0x84 bias.
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent, mantissa = (u >> 4) & 7, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> npt.NDArray[np.int16]:
    # ITU-T G.711 A-law expansion: even bits are inverted on the wire (xor
    # 0x55); the sign bit set means positive.
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exponent, mantissa = (a >> 4) & 7, a & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1)
    )
    return np.where(a & 0x80, magnitude, -magnitude).astype(np.int16)


_MULAW = _mulaw_table()
_ALAW = _alaw_table()


def mulaw_to_s16(data: bytes) -> bytes:
    """Expand G.711 mu-law bytes (one per sample) to ``pcm_s16le``."""
    return _MULAW[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()


def alaw_to_s16(data: bytes) -> bytes:
    """Expand G.711 A-law bytes (one per sample) to ``pcm_s16le``."""
    return _ALAW[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()


class RawDecoder:
    """Push decoder for headerless ``pcm_s16le``, ``mulaw`` or ``alaw``.

    ``feed`` accepts any split and keeps a partial frame for the next call;
    ``flush`` returns nothing but raises ``DecodeError`` if the stream ended
    mid-frame. For passthrough (raw audio is sent upstream untouched), call
    :meth:`passthrough` instead of :meth:`feed`: it returns the whole frames in
    the input encoding and counts them the same way.
    """

    def __init__(self, encoding: str, sample_rate: int, channels: int) -> None:
        if encoding not in RAW_ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(RAW_ENCODINGS)}")
        if sample_rate <= 0 or channels <= 0:
            raise ValueError("sample_rate and channels must be positive")
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.channels = channels
        self.frame_bytes = (2 if encoding == "pcm_s16le" else 1) * channels
        self.samples_out = 0
        """Frames (samples per channel) returned so far."""
        self._aligner = FrameAligner(self.frame_bytes)

    def passthrough(self, data: bytes) -> bytes:
        """Return the whole frames of ``rest + data`` unchanged (input encoding)."""
        whole = self._aligner.take(data)
        self.samples_out += len(whole) // self.frame_bytes
        return whole

    def feed(self, data: bytes) -> bytes:
        """Return the whole frames of ``rest + data`` as interleaved ``pcm_s16le``."""
        raw = self.passthrough(data)
        if self.encoding == "mulaw":
            return mulaw_to_s16(raw)
        if self.encoding == "alaw":
            return alaw_to_s16(raw)
        return raw

    @property
    def pending(self) -> int:
        """Bytes of a partial frame held back until the next ``feed``."""
        return len(self._aligner.held)

    def flush(self) -> bytes:
        """End of stream: raises ``DecodeError`` if a partial frame is left over."""
        rest = self._aligner.drain()
        if rest:
            raise DecodeError(
                f"{self.encoding} stream ended mid-frame ({len(rest)} of {self.frame_bytes} bytes)"
            )
        return b""

    def close(self) -> None:
        """Drop any partial frame. Nothing to release."""
        self._rest = b""


# --------------------------------------------------------------------------
# Container decoding on a private thread


class _Closed(Exception):
    """Raised inside the decode thread's read() when the decoder is closed."""


class _Pipe:
    """A blocking, non-seekable file object: ``read`` waits for ``write`` or EOF.

    No ``seek``/``tell``: PyAV then opens the AVIOContext as non-seekable, so
    demuxers never try to jump to the end of a stream that does not exist yet.
    """

    def __init__(self, cond: threading.Condition) -> None:
        self._cond = cond
        self.on_starved: Callable[[], None] = cond.notify_all
        self._chunks: deque[bytes] = deque()
        self.eof = False
        self.closed = False
        self._close_raised = False
        self.starved = False  # the reader is waiting and nothing is queued
        self.consumed = 0  # bytes handed to FFmpeg so far

    def write(self, data: bytes) -> None:
        """Queue bytes for the reader. Call with the condition held."""
        if data:
            self._chunks.append(bytes(data))
            self.starved = False
            self._cond.notify_all()

    def read(self, size: int = -1) -> bytes:
        """Called by FFmpeg (via PyAV) on the decode thread; blocks until data/EOF."""
        with self._cond:
            while not self._chunks and not self.eof and not self.closed:
                self.starved = True
                self.on_starved()
                self._cond.wait()
            self.starved = False
            if self.closed:
                return self._closed_read()
            return self._take(size)

    def _closed_read(self) -> bytes:
        # Raise once to abort FFmpeg's call; demuxers may read again after an
        # error, and a second exception would make PyAV print "exception being
        # dropped". Later reads see EOF; _emit stops the thread after that.
        if self._close_raised:
            return b""
        self._close_raised = True
        raise _Closed

    def _take(self, size: int) -> bytes:
        if not self._chunks:
            return b""  # EOF: PyAV maps an empty read to AVERROR_EOF
        chunk = self._chunks.popleft()
        if 0 < size < len(chunk):
            self._chunks.appendleft(chunk[size:])
            chunk = chunk[:size]
        self.consumed += len(chunk)  # no wake-up: the caller waits for starved/paused/done
        return chunk


@dataclass
class _Info:
    container: str | None = None
    codec: str | None = None
    source_rate: int | None = None
    source_channels: int | None = None


class ContainerDecoder:
    """Push decoder for any container/codec FFmpeg reads; output is ``pcm_s16le``.

    Two ways to drive it:

    - blocking: :meth:`feed` each slice of the stream (any split, even one
      byte at a time) and get the PCM decodable so far; :meth:`flush` at the
      end for the tail. For tools and tests.
    - in bounded steps (the worker: no input may block the event loop):
      :meth:`write` a slice (or :meth:`finish` at the end), then call
      :meth:`step` until :attr:`idle`; each call waits at most ``budget_s``
      and returns at most about ``step_frames`` of audio. When a step returns
      without being idle, call :meth:`arm` and step again after
      ``on_ready`` is called (from the decode thread).

    PCM is resampled to ``target_rate`` and mixed to ``target_channels``
    (``None`` keeps the source channel count). Call :meth:`close` when done
    (safe at any time, and more than once).

    Hostile input costs bounded time and memory: declared and decoded
    formats are checked (``workers.restart.check_format``), decoded audio is
    bounded to ``max_frames_per_byte`` output frames per input byte (plus
    ``allowance_s`` of audio), and a decoder that makes no progress for
    ``timeout`` seconds fails. Every failure raises ``DecodeError``; the
    decoder is unusable afterwards.

    ``origin`` restarts a stream mid-way (see :class:`RestartPoint`); restart
    points are reported in session frames, ``epoch_frame`` being the session
    frame of the stream's first sample.
    """

    def __init__(
        self,
        target_rate: int = 16000,
        target_channels: int | None = 1,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        resume_every_s: float = 1.0,
        origin: RestartPoint | None = None,
        epoch_frame: int = 0,
        step_frames: int | None = None,
        max_frames_per_byte: float = MAX_FRAMES_PER_BYTE,
        allowance_s: float = 60.0,
    ) -> None:
        if target_rate <= 0 or (target_channels is not None and target_channels <= 0):
            raise ValueError("target_rate and target_channels must be positive")
        self.target_rate = target_rate
        self.target_channels = target_channels
        self.timeout = timeout
        self.samples_out = 0
        """Frames (samples per channel) returned so far."""
        self._origin = origin or RestartPoint(byte=0, frame=epoch_frame)
        self._epoch_frame = epoch_frame
        self.bytes_in = self._origin.byte
        """Input bytes so far, counted like :attr:`RestartPoint.byte`."""
        self.on_ready: Callable[[], None] | None = None
        self._armed = False
        self._cond = threading.Condition()
        self._pipe = _Pipe(self._cond)
        self._pipe.on_starved = self._wake_owner
        self._out: list[bytes] = []
        self._out_frames = 0  # frames in _out (the step bound)
        self._step_frames = step_frames or target_rate
        self._frames_total = 0
        self._max_per_byte = max_frames_per_byte
        self._allowance = allowance_s * target_rate
        self._paused = False
        self._error: BaseException | None = None
        self._last_progress = time.monotonic()
        self._progress_mark = (0, 0)
        self._done = False
        self._info = _Info()
        self._prefix = b""
        self._sniffed = False
        self._scanner: Scanner | None = None
        self._resume_every = resume_every_s * target_rate
        self._points: list[RestartPoint] = []
        self._scanned = 0  # bytes seen by the scanner (a restart's header included)
        self._thread = threading.Thread(target=self._run, name="container-decoder", daemon=True)
        self._threaded = False  # the decode thread was started
        self._lead: bytearray | None = bytearray()  # input while the path is undecided
        self._opus: _OpusPath | None = None
        if origin is not None:
            self._scan(origin.header)
            self._route(origin.header)

    # -- public API ---------------------------------------------------------

    @property
    def container(self) -> str | None:
        """Short container name (``wav``, ``ogg``, ``flac``, ``webm``, ``mp3``,
        ``mp4``; FFmpeg's demuxer name otherwise), once the stream is open."""
        return self._info.container

    @property
    def codec(self) -> str | None:
        """FFmpeg decoder name (e.g. ``opus``, ``mp3float``, ``aac``), once open."""
        return self._info.codec

    @property
    def source_rate(self) -> int | None:
        """Sample rate of the decoded source, after the first decoded audio."""
        return self._info.source_rate

    @property
    def source_channels(self) -> int | None:
        """Channel count of the decoded source, after the first decoded audio."""
        return self._info.source_channels

    @property
    def header_bytes(self) -> bytes | None:
        """The bytes a new decoder needs before mid-stream data, or None.

        None until the header is complete, and for containers without restart
        support (FLAC, WebM, M4A, others). ``b""`` for MP3 (frames are
        self-describing). Prefer a :class:`RestartPoint`'s ``header``: for WAV
        it carries the data size adjusted to the restart offset.
        """
        return None if self._scanner is None else self._scanner.header

    @property
    def restart_points(self) -> list[RestartPoint]:
        """Restart points found so far, oldest first, about ``resume_every_s`` apart.

        Each is valid once ``bytes_in > point.byte``. Drop the ones you no
        longer need with :meth:`forget_restart_points`.
        """
        return list(self._points)

    def restart_point_before(self, frame: int) -> RestartPoint | None:
        """The latest restart point whose ``frame`` is at or before ``frame``."""
        best = None
        for point in self._points:
            if point.frame <= frame:
                best = point
        return best

    def forget_restart_points(self, before_frame: int) -> None:
        """Drop restart points older than the latest one at or before ``before_frame``."""
        keep = self.restart_point_before(before_frame)
        if keep is not None:
            self._points = [p for p in self._points if p.frame >= keep.frame]

    @property
    def consumed(self) -> int:
        """Input bytes FFmpeg has read so far, counted like :attr:`bytes_in`."""
        return self._origin.byte + max(0, self._read() - len(self._origin.header))

    def _read(self) -> int:
        """Input bytes decoded from so far (a restart's header included)."""
        return self._opus.reader.consumed if self._opus is not None else self._pipe.consumed

    @property
    def idle(self) -> bool:
        """True when everything written has been decoded and returned (or the
        stream is over): the next control (flush, end) may be applied."""
        if self._opus is not None:
            return self._opus.idle(self._pipe.eof) and not self._out
        if not self._threaded:
            return not self._out  # waiting for the bytes that choose the path
        with self._cond:
            return self._settled() and not self._out

    def feed(self, data: bytes) -> bytes:
        """Give the next bytes of the stream; return all PCM decodable so far.

        Blocks until the decode thread has used up ``data``. Raises
        ``DecodeError`` if the bytes are not decodable audio or the decoder
        stalls for ``timeout`` seconds.
        """
        self.write(data)
        return self._drain()

    def flush(self) -> bytes:
        """End of stream: drain demuxer, decoder and resampler; return the tail.

        Afterwards only :meth:`close` may be called.
        """
        self.finish()
        out = self._drain()
        if self._threaded:
            self._thread.join(self.timeout)
        return out

    def write(self, data: bytes) -> None:
        """Queue the next bytes of the stream (checks the container structure;
        raises ``DecodeError`` for declared formats no audio has). Then
        :meth:`step` until :attr:`idle`."""
        self._check_open()
        self._scan(data)
        self.bytes_in += len(data)
        self._route(data)

    def finish(self) -> None:
        """End of stream: the rest decodes when stepped (see :meth:`write`)."""
        self._check_open()
        if self._opus is None and not self._threaded:
            self._start_thread()  # too short to choose: FFmpeg says what it is
        with self._cond:
            self._pipe.eof = True
            self._pipe.starved = False  # not idle until the thread drained to the end
            self._cond.notify_all()

    def step(self, budget_s: float = 0.02) -> bytes:
        """Wait up to ``budget_s`` for the decoder to use up its input (or to
        produce a step of audio); return the PCM decoded so far."""
        if self._opus is not None:
            self._opus_step()
            return self._collect()
        if not self._threaded:
            return self._collect()
        with self._cond:
            self._cond.wait_for(self._stopped, budget_s)
            self._check_progress()
        return self._collect()

    def arm(self) -> None:
        """Call ``on_ready`` (once, from the decode thread) when the decoder
        next stops: idle, a step of audio ready, or failed."""
        if not self._threaded:  # no thread: nothing goes on between steps
            if self.on_ready is not None and not self.idle:
                self.on_ready()
            return
        with self._cond:
            if self._stopped():
                self._armed = False
                ready = self.on_ready
            else:
                self._armed, ready = True, None
        if ready is not None:
            ready()

    def close(self, *, wait: bool = True) -> None:
        """Stop the decode thread and release FFmpeg resources. Idempotent.

        ``wait=False`` returns at once (the thread ends on its own): for an
        event loop, which must not wait for another thread.
        """
        with self._cond:
            self._pipe.closed = True
            self._cond.notify_all()
        if self._opus is not None:
            self._opus.close()
        if wait and self._threaded and threading.current_thread() is not self._thread:
            self._thread.join(self.timeout)

    def __enter__(self) -> ContainerDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- caller side ----------------------------------------------------------

    def _check_open(self) -> None:
        if self._pipe.closed or self._pipe.eof:
            raise RuntimeError("decoder is flushed or closed")

    def _pipe_write(self, data: bytes) -> None:
        with self._cond:
            self._pipe.write(data)

    def _route(self, data: bytes) -> None:
        """Input to the path chosen by the stream's first page: Ogg/Opus is
        decoded here, in :meth:`step` (no thread, no hand-off per record);
        everything else by FFmpeg's demuxer on the decode thread."""
        if self._opus is not None:
            self._opus.reader.push(data)
        elif self._threaded:
            self._pipe_write(data)
        else:
            assert self._lead is not None
            self._lead += data
            choice = _choose_path(self._lead)
            if choice == "opus":
                self._opus = _OpusPath(bytes(self._lead))
                self._info.container, self._info.codec = "ogg", "opus"
                self._lead = None
            elif choice == "ffmpeg":
                self._start_thread()

    def _start_thread(self) -> None:
        lead, self._lead = self._lead or b"", None
        self._pipe_write(bytes(lead))
        self._threaded = True
        self._thread.start()

    def _opus_step(self) -> None:
        """Decode up to a step of audio from whole Ogg pages (resampled in
        batches of ``_RESAMPLE_BATCH``); at the end of the input, drain the
        decoder and the resampler. Errors are raised by the next collect."""
        opus = self._opus
        assert opus is not None
        if self._error is not None or self._done:
            return
        try:
            budget = (self._step_frames - self._out_frames) * 48000 // self.target_rate
            batch: list[av.AudioFrame] = []
            decoded = batched = 0
            while decoded < budget:
                frames = opus.next_frames(self._pipe.eof)
                if frames is None:
                    break
                batch += frames
                count = sum(f.samples for f in frames)
                decoded, batched = decoded + count, batched + count
                if batched >= _RESAMPLE_BATCH:
                    self._resample(opus, batch)
                    batch, batched = [], 0
            if batch:
                self._resample(opus, batch)
            if opus.drained:
                if opus.resampler is not None:
                    self._add_out(opus.resampler.resample(None))
                self._done = True
        except DecodeError as exc:
            self._error = exc
        except (av.FFmpegError, ValueError) as exc:
            detail = getattr(exc, "strerror", None) or type(exc).__name__
            self._error = DecodeError(f"cannot decode audio (ogg opus): {detail}")
            self._error.__cause__ = exc

    def _resample(self, opus: _OpusPath, frames: list[av.AudioFrame]) -> None:
        if opus.resampler is None:
            opus.resampler = self._resampler_for(frames[0])
        self._add_out(opus.resampler.resample(_joined(frames)))

    def _add_out(self, frames: list[av.AudioFrame]) -> None:
        """Queue decoded audio for the caller, bounded per input byte (on the
        decode thread, with the condition held)."""
        count = sum(f.samples for f in frames)
        self._frames_total += count
        if self._frames_total > self._allowance + self._max_per_byte * self._read():
            raise DecodeError(
                f"audio expands to more than {self._max_per_byte:g} frames per input byte"
            )
        self._out.extend(_packed_bytes(f) for f in frames)
        self._out_frames += count

    def _settled(self) -> bool:
        return self._done or (self._pipe.starved and not self._paused)

    def _stopped(self) -> bool:
        return self._settled() or self._paused or self._error is not None

    def _drain(self) -> bytes:
        if not self._threaded:
            parts = [self.step()]
            while not self.idle:
                parts.append(self.step())
            return b"".join(parts)
        parts = []
        while True:
            with self._cond:
                self._cond.wait_for(self._stopped, self.timeout)
                self._check_progress()
                settled = self._settled()
            parts.append(self._collect())
            if settled and self.idle:
                return b"".join(parts)

    def _check_progress(self) -> None:
        """Condition held: fail a decoder that made no progress (bytes read or
        audio out) for ``timeout`` seconds."""
        mark, now = (self._frames_total, self._pipe.consumed), time.monotonic()
        if mark != self._progress_mark:
            self._progress_mark, self._last_progress = mark, now
        if self._stopped() or now - self._last_progress < self.timeout:
            return
        self._error = self._error or DecodeError(f"decoder made no progress for {self.timeout:g} s")
        self._pipe.closed = True
        self._cond.notify_all()

    def _collect(self) -> bytes:
        with self._cond:
            out, self._out = b"".join(self._out), []
            self._out_frames = 0
            # A paused thread goes on: not stopped any more until it stops
            # again (else the caller's next wait would return at once and
            # spin against the decode thread for the GIL).
            self._paused = False
            error = self._error
            self._cond.notify_all()
        if error is not None:
            self.close(wait=False)
            if isinstance(error, DecodeError):
                raise error
            raise DecodeError(f"cannot decode audio: {error}") from error
        self.samples_out += len(out) // (2 * (self.target_channels or self.source_channels or 1))
        return out

    def _scan(self, data: bytes) -> None:
        """Track container structure (header bytes, restart points) in the input.

        The scanners raise ``DecodeError`` for what they refuse; anything else
        they raise is a scanner bug on hostile bytes, translated here too.
        """
        try:
            self._scan_checked(data)
        except DecodeError:
            raise
        except (ValueError, IndexError, OverflowError, struct.error) as exc:
            raise DecodeError(f"malformed container structure: {type(exc).__name__}") from exc

    def _scan_checked(self, data: bytes) -> None:
        base = self._scanned
        self._scanned += len(data)
        if self._scanner is not None:
            self._add_points(self._scanner.feed(data, base))
            return
        if self._sniffed:
            return
        self._prefix += data
        if len(self._prefix) < 12:
            return
        # sniff_container needs 12 bytes (RIFF....WAVE, ....ftyp).
        self._sniffed = True
        prefix, self._prefix = self._prefix, b""
        self._scanner = scanner_for(sniff_container(prefix))
        if self._scanner is not None:
            self._add_points(self._scanner.feed(prefix, 0))

    def _add_points(self, candidates: list[tuple[int, int, bytes, int]]) -> None:
        origin, scanner = self._origin, self._scanner
        assert scanner is not None
        base = self._epoch_frame if scanner.absolute_samples else origin.frame
        for offset, src_samples, header, src_rate in candidates:
            byte = origin.byte + offset - len(origin.header)
            if origin.byte and byte <= origin.byte:
                continue  # the restart point itself
            frame = base + src_samples * self.target_rate // src_rate
            last = self._points[-1] if self._points else None
            if last is None or frame - last.frame >= self._resume_every:
                self._points.append(RestartPoint(byte=byte, frame=frame, header=header))

    # -- decode thread --------------------------------------------------------

    def _run(self) -> None:
        try:
            with av.open(
                self._pipe, mode="r", options=_OPEN_OPTIONS, buffer_size=_READ_SIZE
            ) as box:
                self._decode(box)
        except _Closed:
            pass
        except av.FFmpegError as exc:
            # str(exc) names the file ('<none>' for a file object): use strerror.
            detail = exc.strerror or type(exc).__name__
            where = f" ({self._info.container} {self._info.codec})" if self._info.codec else ""
            self._fail(DecodeError(f"cannot decode audio{where}: {detail}"), exc)
        except DecodeError as exc:
            self._fail(exc, None)
        except Exception as exc:  # a PyAV/FFmpeg surprise must not kill silently
            self._fail(DecodeError(f"cannot decode audio: {exc!r}"), exc)
        finally:
            with self._cond:
                self._done = True
                self._wake_owner()

    def _fail(self, error: DecodeError, cause: BaseException | None) -> None:
        error.__cause__ = cause
        with self._cond:
            self._error = self._error or error

    def _wake_owner(self) -> None:
        """Condition held, decode thread: the decoder stopped; tell whoever waits."""
        self._cond.notify_all()
        if self._armed and self.on_ready is not None:
            self._armed = False
            self.on_ready()

    def _decode(self, box: av.container.InputContainer) -> None:
        if not box.streams.audio:
            raise DecodeError(f"no audio stream in {box.format.name} input")
        stream = box.streams.audio[0]
        with self._cond:
            self._info.container = _short_name(box.format.name)
            self._info.codec = stream.codec_context.name
        resampler: av.AudioResampler | None = None
        for frame in _frames(box, stream):
            if resampler is None:
                resampler = self._resampler_for(frame)
            self._emit(resampler.resample(frame))
        if resampler is not None:
            self._emit(resampler.resample(None))  # None drains swresample's delay

    def _resampler_for(self, frame: av.AudioFrame) -> av.AudioResampler:
        channels = len(frame.layout.channels)
        check_format(frame.sample_rate, channels, "decoded audio")
        with self._cond:
            self._info.source_rate = frame.sample_rate
            self._info.source_channels = channels
        out_channels = self.target_channels or channels
        layout = _layout_name(out_channels) if self.target_channels else frame.layout.name
        return av.AudioResampler(format="s16", layout=layout, rate=self.target_rate)

    def _emit(self, frames: list[av.AudioFrame]) -> None:
        with self._cond:
            if self._pipe.closed:
                raise _Closed
            self._add_out(frames)
            while self._out_frames >= self._step_frames and not self._pipe.closed:
                self._paused = True
                self._wake_owner()
                self._cond.wait()
            self._paused = False
            if self._pipe.closed:
                raise _Closed


# --------------------------------------------------------------------------
# Ogg/Opus without a thread


def _choose_path(lead: bytes | bytearray) -> str | None:
    """``"opus"`` when the stream's first page is an Ogg Opus identification
    header of a mono or stereo stream (mapping family 0: what calls carry),
    ``"ffmpeg"`` for anything else, None while the first page is incomplete."""
    if len(lead) < 5:
        return None if b"OggS\x00".startswith(bytes(lead)) else "ffmpeg"
    if lead[:5] != b"OggS\x00":
        return "ffmpeg"
    size = page_size(lead)
    if size is None:
        return None  # a page is at most 65,307 bytes
    segments = lead[26]
    body = bytes(lead[27 + segments : size])
    opus_head = (
        segments == 1
        and len(body) >= 19
        and body.startswith(b"OpusHead")
        and body[8] >> 4 == 0  # version 0.x
        and body[9] in (1, 2)
        and body[18] == 0
    )
    return "opus" if lead[5] & 2 and opus_head else "ffmpeg"


class _OpusPath:
    """Ogg pages split by :class:`~workers.ogg.OggReader`, Opus packets decoded
    by FFmpeg's decoder on the caller's thread. The output is FFmpeg's Ogg
    demuxer's, sample for sample: the decoder trims the pre-skip (again after
    a restart, as FFmpeg does), and the end-of-stream page's granule trims
    the last packet."""

    def __init__(self, lead: bytes) -> None:
        self.reader = OggReader()
        self.reader.push(lead)
        self.resampler: av.AudioResampler | None = None
        self.drained = False
        self._codec: av.AudioCodecContext | None = None
        self._packets: deque[OggPacket] = deque()
        self._headers = 0  # header packets seen (OpusHead, OpusTags)
        self._pre_skip = 0
        self._start: int | None = None  # the granule before the first audio packet
        self._limit: int | None = None  # decoder samples in all, once the last page is read
        self._decoded = 0  # decoder samples (48 kHz) so far
        self._skip = 0  # decoder samples still to drop (a chained stream's pre-skip)
        self._channels = 0

    def idle(self, eof: bool) -> bool:
        if self.drained:
            return True
        return not eof and not self._packets and not self.reader.has_page()

    def next_frames(self, eof: bool) -> list[av.AudioFrame] | None:
        """The frames of the next audio packet ([] for one that decodes to
        nothing yet), or None when the input has nothing more for now."""
        while not self._packets:
            if self.reader.has_page():
                self._packets.extend(self._page(self.reader.packets()))
            elif eof and not self.drained:
                self.drained = True
                return self._trim(self._codec.decode(None)) if self._codec else []
            else:
                return None
        packet = self._packets.popleft()
        assert self._codec is not None
        return self._trim(self._codec.decode(av.Packet(packet.data)))

    def close(self) -> None:
        self._packets.clear()
        self._codec = None

    def _page(self, packets: list[OggPacket]) -> list[OggPacket]:
        audio = []
        for packet in packets:
            if packet.bos and self._headers >= 2:  # a chained stream: its own headers
                self._headers, self._start, self._limit, self._decoded = 0, None, None, 0
            if self._headers < 2:
                self._header(packet.data)
            elif packet.data:  # an empty packet would drain the decoder
                audio.append(packet)
        if not audio:
            return audio
        granule = audio[-1].granule
        if self._start is None:
            self._start = granule - sum(opus_samples(p.data) for p in audio)
        if audio[-1].eos:
            self._limit = max(0, granule - self._start - self._pre_skip)
        return audio

    def _header(self, data: bytes) -> None:
        self._headers += 1
        if self._headers > 1:
            return  # OpusTags: nothing the audio needs
        if not data.startswith(b"OpusHead") or len(data) < 19:
            raise DecodeError("a chained Ogg stream that is not Opus")
        check_format(48000, data[9], "OpusHead")
        self._pre_skip = struct.unpack_from("<H", data, 10)[0]
        if self._codec is not None:
            # A chained stream: FFmpeg's demuxer keeps the decoder and trims
            # the new stream's pre-skip from its output.
            if data[9] != self._channels:
                raise DecodeError("a chained Ogg stream with another channel count")
            self._skip = self._pre_skip
            return
        self._channels = data[9]
        codec = av.CodecContext.create("opus", "r")
        assert isinstance(codec, av.AudioCodecContext)
        codec.extradata = data
        self._codec = codec

    def _trim(self, frames: list[av.AudioFrame]) -> list[av.AudioFrame]:
        while self._skip and frames:
            first = frames[0]
            if first.samples <= self._skip:
                self._skip -= first.samples
                frames = frames[1:]
            else:
                frames = [_samples(first, self._skip, first.samples), *frames[1:]]
                self._skip = 0
        if self._limit is None:
            self._decoded += sum(f.samples for f in frames)
            return frames
        out = []
        for frame in frames:
            room = self._limit - self._decoded
            if room <= 0:
                break
            kept = frame if frame.samples <= room else _samples(frame, 0, room)
            self._decoded += kept.samples
            out.append(kept)
        return out


def _joined(frames: list[av.AudioFrame]) -> av.AudioFrame:
    """Consecutive frames of one format as one frame."""
    first = frames[0]
    if len(frames) == 1:
        return first
    arrays: list[Any] = [f.to_ndarray() for f in frames]
    joined = av.AudioFrame.from_ndarray(
        np.concatenate(arrays, axis=1), format=first.format.name, layout=first.layout.name
    )
    joined.sample_rate = first.sample_rate
    return joined


def _samples(frame: av.AudioFrame, start: int, stop: int) -> av.AudioFrame:
    """Samples ``start`` to ``stop`` of ``frame``, as a frame of the same format."""
    array: Any = frame.to_ndarray()  # float32 (the Opus decoder's fltp) or s16
    width = 1 if frame.format.is_planar else len(frame.layout.channels)
    cut = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(array[:, start * width : stop * width]),
        format=frame.format.name,
        layout=frame.layout.name,
    )
    cut.sample_rate = frame.sample_rate
    return cut


def _frames(box: av.container.InputContainer, stream: av.AudioStream) -> Iterator[av.AudioFrame]:
    # demux() ends with an empty packet whose decode() drains the decoder.
    for packet in box.demux(stream):
        yield from packet.decode()


def _packed_bytes(frame: av.AudioFrame) -> bytes:
    # Packed s16: plane 0 holds all channels interleaved, padded for alignment.
    size = frame.samples * 2 * len(frame.layout.channels)
    return bytes(memoryview(frame.planes[0])[:size])


def _layout_name(channels: int) -> str:
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")


_SHORT_NAMES = {
    "wav": "wav",
    "ogg": "ogg",
    "flac": "flac",
    "matroska,webm": "webm",
    "mp3": "mp3",
    "mov,mp4,m4a,3gp,3g2,mj2": "mp4",
}


def _short_name(ffmpeg_name: str) -> str:
    return _SHORT_NAMES.get(ffmpeg_name, ffmpeg_name)
