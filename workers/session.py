"""A session (sans-I/O): input records in, upstream streams and coverage out.

A :class:`Session` turns the audio of ``stt.audio`` records into what its
upstream streams send: containers are decoded to ``pcm_s16le`` at the
upstream rate (ARCHITECTURE.md, "Upstream": always an explicit encoding), raw
``pcm_s16le``/``mulaw``/``alaw`` pass through untouched, and in ``split`` mode
each channel becomes its own mono stream.

It also answers the commit question: :meth:`covered_offset` is the highest
input offset whose audio every stream has covered, so the partition's offset
may be committed past it (ARCHITECTURE.md, "Delivery").
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from schemas.envelope import SessionConfig
from schemas.wire import Encoding
from workers.checkpoint import Checkpoint, StreamCheckpoint
from workers.errors import DecodeError
from workers.frames import FrameAligner
from workers.stream import ChannelStream
from workers.transcode import ContainerDecoder, ResumePoint, sniff_container, split_channels

SNIFF_BYTES = 12  # sniff_container needs this many bytes
# Width in bytes of one sample of each raw encoding.
_SAMPLE_WIDTH = {"pcm_s16le": 2, "mulaw": 1, "alaw": 1}


def stream_rate(config: SessionConfig, upstream_rate: int) -> int:
    """Sample rate of a session's upstream streams: decoded containers are
    resampled to ``upstream_rate``, raw audio passes through at its own."""
    return upstream_rate if config.encoding == "auto" else config.sample_rate


@dataclass
class _Mark:
    """One fed record: its input bytes and what must happen before it is done."""

    offset: int
    byte_start: int
    byte_end: int
    flushes: tuple[str, ...] = ()  # user flushes it requested (done once confirmed)
    end: bool = False  # an ``end`` record: done only when the session has ended


@dataclass(frozen=True)
class Position:
    """Where a new owner would resume this session now (see workers.checkpoint)."""

    offset: int
    record_byte: int
    resume_byte: int
    resume_frame: int
    header: bytes
    streams: tuple[StreamCheckpoint, ...]


class Session:
    """One session's decoding, streams and offset coverage.

    Feed records in offset order with :meth:`feed` (and :meth:`flush` for
    ``flush``/``end`` records), then :meth:`mark` each; pump each of
    :attr:`streams` to its upstream. Raises
    :class:`workers.errors.DecodeError` from :meth:`feed` for audio that
    cannot be decoded: the caller dead-letters that record and goes on.

    ``resume`` continues a session from a checkpoint written by another
    worker: input bytes before ``resume.resume_byte`` are dropped, decoding
    restarts there, and each stream skips what its finals already covered.
    """

    def __init__(
        self,
        session_id: str,
        config: SessionConfig,
        *,
        upstream_rate: int,
        start_ms: int = 0,
        resume: Checkpoint | None = None,
    ) -> None:
        self.session_id = session_id
        self._start_ms = start_ms  # session time at which this configuration began
        self.config = config
        self._split = config.channel_mode == "split"
        self._decoder: ContainerDecoder | None = None
        self._prefix: bytes | None = b""  # first bytes of a container, until it is recognised
        self._rate = stream_rate(config, upstream_rate)
        self._epoch_frame = start_ms * self._rate // 1000
        # where decoding (re)started: input byte, session frame, container header
        self._origin = (0, self._epoch_frame, b"")
        self._resumed: tuple[StreamCheckpoint, ...] = ()
        self.input_bytes = 0  # input bytes of this configuration seen so far
        self._skip = 0  # input bytes still to drop (resumed: already covered)
        self._first_offset: int | None = None
        self._mark_byte = 0  # input byte where the next marked record begins
        if resume is not None:
            self._origin = (resume.resume_byte, resume.resume_frame, resume.header)
            self._resumed = resume.streams
            self.input_bytes = self._mark_byte = resume.record_byte
            self._skip = resume.resume_byte - resume.record_byte
            self._first_offset = resume.offset
            self._prefix = None  # checked by the owner before
        if config.encoding == "auto":
            self._decoder = self._new_decoder(upstream_rate)
        self.streams: list[ChannelStream] = []
        self._interleaved: FrameAligner | None = None  # split mode: whole interleaved frames
        self._marks: deque[_Mark] = deque()
        self.audio_bytes = 0
        if not self._split or config.encoding != "auto":
            self._open_streams(config.channels if config.encoding != "auto" else 1)

    def _new_decoder(self, upstream_rate: int) -> ContainerDecoder:
        byte, frame, header = self._origin
        point = None
        if byte > 0:
            point = ResumePoint(offset=byte, samples=frame - self._epoch_frame, header=header)
        return ContainerDecoder(
            target_rate=upstream_rate,
            target_channels=None if self._split else 1,
            resume=point,
        )

    # ------------------------------------------------------------------ streams

    def _open_streams(self, source_channels: int) -> None:
        encoding: Encoding = "pcm_s16le" if self.config.encoding == "auto" else self.config.encoding
        start = self._origin[1]
        channels = 1 if self._split else source_channels
        params = self.config.upstream_params(encoding, self._rate, channels)
        count = source_channels if self._split else 1
        self.streams = []
        for i in range(count):
            saved = self._resumed[i] if i < len(self._resumed) else None
            stream = ChannelStream(
                self.session_id,
                params,
                channel=i if self._split else None,
                label=self.config.label(i) if self._split else None,
                start_frame=start,
                resume_covered=saved.covered if saved else start,
                next_turn_index=saved.turn_index if saved else 0,
                flush_seq=saved.flush_seq if saved else 0,
                resumed=saved is not None,
            )
            if saved is not None:
                stream.stats.finals = saved.finals
                stream.stats.connections = saved.connections
                stream.stats.reconnects = saved.reconnects
                stream.events_emitted()
            self.streams.append(stream)

    # ------------------------------------------------------------------ input

    def feed(self, audio: bytes) -> None:
        """Decode (if needed) and push one record's audio into the streams."""
        self.audio_bytes += len(audio)
        self.input_bytes += len(audio)
        if self._skip:
            dropped = min(self._skip, len(audio))
            self._skip -= dropped
            audio = audio[dropped:]
        if not audio:
            return
        if self._decoder is not None:
            self._check_container(audio)
            self._push_pcm(self._decoder.feed(audio))
        else:
            self._push_raw(audio)

    def _check_container(self, audio: bytes) -> None:
        """Reject a stream that starts with no known container header at once;
        FFmpeg would only give up after a large probe (and the record would be
        held, not dead-lettered)."""
        if self._prefix is None:
            return
        self._prefix += audio[:SNIFF_BYTES]
        if len(self._prefix) < SNIFF_BYTES:
            return
        if sniff_container(self._prefix) is None:
            self._prefix = self._prefix[:0]
            self.audio_bytes -= len(audio)
            self.input_bytes -= len(audio)
            raise DecodeError("no known container header (WAV, OGG, FLAC, WebM, MP3, MP4)")
        self._prefix = None

    def finish_input(self) -> None:
        """End of the session's audio: drain the decoder into the streams."""
        if self._decoder is not None:
            self._push_pcm(self._decoder.flush())

    def _push_pcm(self, pcm: bytes) -> None:
        if not pcm:
            return
        if not self.streams:
            channels = self._decoder.source_channels if self._decoder else None
            self._open_streams(max(1, channels or 1))
        self._distribute(pcm, 2)

    def _push_raw(self, audio: bytes) -> None:
        self._distribute(audio, _SAMPLE_WIDTH[self.config.encoding])

    def _distribute(self, data: bytes, width: int) -> None:
        if not self._split:
            self.streams[0].push(data)
            return
        if self._interleaved is None:
            self._interleaved = FrameAligner(width * len(self.streams))
        whole = self._interleaved.take(data)
        if width == 2:
            parts = split_channels(whole, len(self.streams))
        else:
            parts = [whole[i :: len(self.streams)] for i in range(len(self.streams))]
        for stream, part in zip(self.streams, parts, strict=True):
            stream.push(part)

    def flush(self, *, user: bool) -> list[str]:
        """Queue a flush on every stream; returns the flush ids."""
        return [stream.request_flush(user=user) for stream in self.streams]

    # ------------------------------------------------------------------ offsets

    def mark(self, offset: int, *, flushes: Sequence[str] = (), end: bool = False) -> None:
        """Record that input up to ``offset`` has been fed (call after each record),
        with the user flushes it requested and whether it ended the session."""
        if self._first_offset is None:
            self._first_offset = offset
        self._marks.append(_Mark(offset, self._mark_byte, self.input_bytes, tuple(flushes), end))
        self._mark_byte = self.input_bytes

    def position(self) -> Position | None:
        """Where a new owner would resume now, from the coverage whose events the
        broker has acknowledged; None before the first record. Forgets the
        marks and decoder restart points that lie before it."""
        if self._first_offset is None:
            return None
        byte, frame, header = self._restart_point()
        offset, record_byte = self._first_offset, self._mark_byte
        if self._marks:
            offset = self._marks[-1].offset + 1
        while self._marks:
            mark = self._marks[0]
            if mark.byte_end > byte or mark.end or any(self._pending(f) for f in mark.flushes):
                offset, record_byte = mark.offset, mark.byte_start
                break
            self._marks.popleft()
        self._first_offset = offset
        streams = (
            tuple(
                StreamCheckpoint(
                    covered=s.durable,
                    turn_index=s.durable_turn,
                    flush_seq=s.flush_seq,
                    finals=s.durable_finals,
                    connections=s.stats.connections,
                    reconnects=s.stats.reconnects,
                )
                for s in self.streams
            )
            or self._resumed
        )
        return Position(offset, record_byte, byte, frame, header, streams)

    def checkpoint(
        self, partition: int, *, prior_finals: int = 0, prior_reconnects: int = 0
    ) -> Checkpoint | None:
        """The checkpoint of :meth:`position` (None before the first record)."""
        position = self.position()
        if position is None:
            return None
        return Checkpoint(
            session_id=self.session_id,
            partition=partition,
            offset=position.offset,
            record_byte=position.record_byte,
            resume_byte=position.resume_byte,
            resume_frame=position.resume_frame,
            header=position.header,
            config=self.config,
            config_start_ms=self.start_ms,
            streams=position.streams,
            prior_finals=prior_finals,
            prior_reconnects=prior_reconnects,
            updated_at=time.time(),
        )

    def _pending(self, flush_id: str) -> bool:
        return any(s.is_pending(flush_id) for s in self.streams)

    def _restart_point(self) -> tuple[int, int, bytes]:
        """The latest input byte from which decoding can restart and still cover
        everything not yet durably covered: (byte, session frame, header)."""
        if not self.streams:
            return self._origin
        covered = min(s.durable for s in self.streams)
        if self._decoder is None:
            frame_bytes = _SAMPLE_WIDTH[self.config.encoding] * self.config.channels
            return ((covered - self._epoch_frame) * frame_bytes, covered, b"")
        relative = covered - self._epoch_frame
        point = self._decoder.resume_point_before(relative)
        if point is None or point.offset <= self._origin[0]:
            return self._origin
        self._decoder.forget_resume_points(relative)
        return (point.offset, self._epoch_frame + point.samples, point.header)

    @property
    def uncovered_seconds(self) -> float:
        """Largest amount of uncovered audio on any stream, in seconds."""
        return max((s.uncovered_frames / s.rate for s in self.streams), default=0.0)

    @property
    def audio_seconds(self) -> float:
        """Session time reached so far, in seconds (from the session's start)."""
        return max(
            (s.frames_in / s.rate for s in self.streams), default=self._origin[1] / self._rate
        )

    @property
    def start_ms(self) -> int:
        """Session time at which this configuration began."""
        return self._start_ms

    def close(self) -> None:
        """Release the decoder thread; call once the session is over."""
        if self._decoder is not None:
            self._decoder.close()
