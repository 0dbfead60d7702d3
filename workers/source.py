"""The input side of one session configuration (sans-I/O): records in, the
audio of each upstream stream out, in bounded steps.

A :class:`Source` turns the audio of ``stt.audio`` records into what its
upstream streams send: containers are decoded to ``pcm_s16le`` at the
upstream rate (ARCHITECTURE.md, "Upstream": always an explicit encoding), raw
``pcm_s16le``/``mulaw``/``alaw`` pass through untouched, and in ``split`` mode
each channel becomes its own mono stream.

Records are :meth:`~Source.add`\\ ed in offset order and processed by
:meth:`~Source.process`, which never waits longer than its budget: raw audio
and small container records are done at once; a container record that takes
longer to decode leaves the source :attr:`~Source.busy`, and the caller steps
it again later (after the decoder's ``on_ready``). A ``flush`` or ``end``
record applies once everything before it is decoded.

Undecodable audio ends the source: :attr:`~Source.rejected` lists the records
to dead-letter (the one whose bytes failed; every record of a stream that
never produced audio; the records queued after it), and the audio decoded
before stays in the streams, so the good part keeps its finals.

It also answers the commit question: :meth:`~Source.position` says where a new
owner would resume (the latest restart point behind the durable coverage of
every stream, and the first record not fully behind it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from schemas.envelope import SessionConfig
from schemas.wire import Encoding
from workers.checkpoint import Checkpoint, StreamCheckpoint
from workers.errors import DecodeError
from workers.frames import FrameAligner
from workers.restart import RestartPoint
from workers.stream import ChannelStream
from workers.transcode import (
    ContainerDecoder,
    alaw_to_s16,
    mulaw_to_s16,
    sniff_container,
    split_channels,
)

SNIFF_BYTES = 12  # sniff_container needs this many bytes
MAX_SPLIT_CHANNELS = 10  # one upstream stream each; the API's channel range
# Bytes a container may take before it yields any audio (headers, probing);
# beyond, the stream is not audio the worker can decode.
MAX_UNPROVEN_BYTES = 1 << 20
_SAMPLE_WIDTH = {"pcm_s16le": 2, "mulaw": 1, "alaw": 1}
_EXPAND = {"mulaw": mulaw_to_s16, "alaw": alaw_to_s16}


def stream_rate(config: SessionConfig, upstream_rate: int) -> int:
    """Sample rate of a session's upstream streams: decoded containers are
    resampled to ``upstream_rate``, raw audio passes through at its own."""
    return upstream_rate if config.encoding == "auto" else config.sample_rate


@dataclass
class _Mark:
    """One record: its input bytes and what must happen before it is done."""

    offset: int
    byte_start: int
    byte_end: int
    flushes: tuple[str, ...] = ()  # user flushes it requested (done once confirmed)
    end: bool = False  # an ``end`` record: done only when the session has ended


@dataclass
class _Item:
    """A queued record: audio to decode, then its control (flush/end)."""

    offset: int | None  # None: the end of input without a record (idle, reconfigured)
    audio: bytes
    kind: str
    record: object
    dropped: int = 0  # leading bytes dropped (resumed: covered before the takeover)
    written: bool = False


@dataclass(frozen=True)
class Rejected:
    """A record to dead-letter: ``record`` is what the caller passed to :meth:`Source.add`."""

    offset: int
    record: object
    code: str
    detail: str


@dataclass(frozen=True)
class Position:
    """Where a new owner would resume this source now (see workers.checkpoint)."""

    offset: int
    record_byte: int
    restart: RestartPoint
    streams: tuple[StreamCheckpoint, ...]


@dataclass
class _Unproven:
    """Records of a container that has not produced audio yet (to dead-letter
    them all if it never does), bounded by ``MAX_UNPROVEN_BYTES``."""

    records: list[tuple[int, object]] = field(default_factory=list)
    size: int = 0


class Source:
    """One configuration's decoding, streams and record coverage.

    :meth:`add` records in offset order, then :meth:`process` until not
    :attr:`busy`; pump each of :attr:`streams` to its upstream. When
    :attr:`failed`, dead-letter :attr:`rejected` and end the session (its
    streams still hold the audio decoded before the failure).

    ``resume`` continues a session from a checkpoint written by another
    worker: input bytes before the restart point are dropped, decoding
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
        g711_upstream: bool = False,
        max_held_s: float | None = None,
    ) -> None:
        self.session_id = session_id
        self.config = config
        # Reson8's realtime endpoint documents `auto` and `pcm_s16le` only: G.711
        # is expanded (cheap, exact) unless the deployment says its upstream takes
        # it; turns documents mulaw/alaw and gets them untouched.
        self._expand = _EXPAND.get(config.encoding)
        if g711_upstream or config.endpoint == "turns":
            self._expand = None
        self.start_ms = start_ms  # session time at which this configuration began
        self._upstream_rate = upstream_rate
        self._split = config.channel_mode == "split"
        self._rate = stream_rate(config, upstream_rate)
        self._max_held = None if max_held_s is None else int(max_held_s * self._rate)
        self._epoch_frame = start_ms * self._rate // 1000
        self.origin = RestartPoint(byte=0, frame=self._epoch_frame)
        self._resumed: tuple[StreamCheckpoint, ...] = ()
        self.input_bytes = 0  # input bytes of this configuration seen so far
        self._skip = 0  # input bytes still to drop (resumed: already covered)
        self._first_offset: int | None = None
        self._mark_byte = 0  # input byte where the next marked record begins
        self._prefix: bytes | None = b""  # first bytes of a container, until recognised
        if resume is not None:
            self.origin = resume.restart
            self._resumed = resume.streams
            self.input_bytes = self._mark_byte = resume.record_byte
            self._skip = resume.restart.byte - resume.record_byte
            self._first_offset = resume.offset
            self._prefix = None  # checked by the owner before
        self._container = config.encoding == "auto"
        self._decoder: ContainerDecoder | None = None  # started with the first container bytes
        self.streams: list[ChannelStream] = []
        self._interleaved: FrameAligner | None = None  # split mode: whole interleaved frames
        self._marks: deque[_Mark] = deque()
        self._queue: deque[_Item] = deque()
        self._unproven: _Unproven | None = _Unproven() if self._container else None
        self.rejected: list[Rejected] = []
        self.failed: DecodeError | None = None
        self.finished = False  # the end of input was processed
        self._end_queued = False
        self._last_fed: _Item | None = None  # the last record whose audio the decoder got
        if not self._split or config.encoding != "auto":
            self._open_streams(config.channels if config.encoding != "auto" else 1)

    def _new_decoder(self) -> ContainerDecoder:
        origin = self.origin if self.origin.byte > 0 else None
        return ContainerDecoder(
            target_rate=self._upstream_rate,
            target_channels=None if self._split else 1,
            origin=origin,
            epoch_frame=self._epoch_frame,
        )

    # ------------------------------------------------------------------ streams

    def _open_streams(self, source_channels: int) -> None:
        if self._split and source_channels > MAX_SPLIT_CHANNELS:
            raise DecodeError(
                f"split mode takes up to {MAX_SPLIT_CHANNELS} channels, the audio has "
                f"{source_channels}"
            )
        encoding: Encoding = self.config.encoding
        if encoding == "auto" or self._expand is not None:
            encoding = "pcm_s16le"
        channels = 1 if self._split else source_channels
        params = self.config.upstream_params(encoding, self._rate, channels)
        count = source_channels if self._split else 1
        self.streams = [self._stream(i, params) for i in range(count)]

    def _stream(self, i: int, params: object) -> ChannelStream:
        saved = self._resumed[i] if i < len(self._resumed) else None
        start = self.origin.frame
        stream = ChannelStream(
            self.session_id,
            params,  # type: ignore[arg-type]
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
        return stream

    # ------------------------------------------------------------------ input

    def add(self, offset: int, audio: bytes, kind: str, record: object = None) -> None:
        """Queue one record (``kind``: audio, flush or end); call :meth:`process`.

        ``record`` is handed back in :attr:`rejected` if it must be dead-lettered.
        A container whose first bytes are no known container fails at once
        (see :attr:`failed`).
        """
        if self._first_offset is None:
            self._first_offset = offset
        dropped = min(self._skip, len(audio))
        self._skip -= dropped
        item = _Item(offset, audio[dropped:], kind, record, dropped)
        self._queue.append(item)
        self._end_queued |= kind == "end"
        if item.audio and self._container and self.failed is None:
            try:
                self._check_container(item.audio)
            except DecodeError as exc:
                self._fail(exc, item)

    def _check_container(self, audio: bytes) -> None:
        """Reject a stream that starts with no known container header at once;
        FFmpeg would only give up after a large probe."""
        if self._prefix is None:
            return
        prefix = self._prefix + audio[:SNIFF_BYTES]
        if len(prefix) < SNIFF_BYTES:
            self._prefix = prefix
            return
        if sniff_container(prefix) is None:
            raise DecodeError("no known container header (WAV, OGG, FLAC, WebM, MP3, MP4)")
        self._prefix = None

    def end(self) -> None:
        """No more input (an idle session, or a new configuration): decode the
        rest and flush, without a record of its own. Idempotent."""
        if not self._end_queued and self.failed is None:
            self._end_queued = True
            self._queue.append(_Item(None, b"", "end", None))

    @property
    def busy(self) -> bool:
        """True while queued input waits for the decoder (step again later)."""
        return bool(self._queue) and self.failed is None

    @property
    def held(self) -> bool:
        """True while a stream holds more uncovered audio than ``max_held_s``:
        the input waits in the queue (its bytes, not their decoded audio) until
        finals cover some; call :meth:`process` again after progress."""
        limit = self._max_held
        if limit is None:
            return False
        return any(s.frames_in - s.covered > limit for s in self.streams)

    def process(self, budget_s: float = 0.02) -> None:
        """Work through the queue, waiting for the decoder at most ``budget_s``
        per step; stops early when the decoder is still busy or the streams
        hold enough (see :attr:`busy`, :attr:`held`)."""
        while self._queue and self.failed is None and not self.held:
            item = self._queue[0]
            try:
                if not self._process_one(item, budget_s):
                    return
            except DecodeError as exc:
                self._fail(exc, item)
                return
            self._queue.popleft()

    def _process_one(self, item: _Item, budget_s: float) -> bool:
        """Advance ``item``; True when it is done."""
        if not self._container:
            self._push_raw(item.audio)
        elif not self._decode(item, budget_s):
            return False
        self._control(item)
        return True

    def _decode(self, item: _Item, budget_s: float) -> bool:
        if self._decoder is None:
            if not item.audio:
                return True  # an end before any audio: nothing to decode
            self._decoder = self._new_decoder()
        decoder = self._decoder
        if not item.written:
            item.written = True
            if item.audio:
                decoder.write(item.audio)
                self._last_fed = item
                self._note_unproven(item)
            if item.kind == "end" and self._last_fed is not None:
                decoder.finish()
            elif item.kind == "end":
                return True  # no audio at all: nothing to decode
        self._push_pcm(decoder.step(budget_s))
        return decoder.idle

    def _note_unproven(self, item: _Item) -> None:
        unproven = self._unproven
        if unproven is None or item.offset is None:
            return
        unproven.records.append((item.offset, item.record))
        unproven.size += len(item.audio)
        if unproven.size > MAX_UNPROVEN_BYTES:
            raise DecodeError(f"no audio in the first {MAX_UNPROVEN_BYTES} bytes")

    def _control(self, item: _Item) -> None:
        flushes: tuple[str, ...] = ()
        if item.kind in ("flush", "end"):
            # A producer's flush/end is confirmed to it (flush_confirmed); an
            # end of input without a record is the worker's own flush. An end
            # flushes only what is uncovered (nothing to finalize, no upstream).
            user, end = item.offset is not None, item.kind == "end"
            flushes = tuple(self.flush(user=user, only_uncovered=end))
        if item.kind == "end":
            self.finished = True
        if item.offset is None:
            return
        self.input_bytes += item.dropped + len(item.audio)
        self._marks.append(
            _Mark(item.offset, self._mark_byte, self.input_bytes, flushes, item.kind == "end")
        )
        self._mark_byte = self.input_bytes

    def arm(self, on_ready: Callable[[], None]) -> None:
        """Call ``on_ready()`` (from the decode thread) when a busy source can
        be processed again."""
        if self._decoder is not None and self.busy:
            self._decoder.on_ready = on_ready
            self._decoder.arm()

    def _fail(self, error: DecodeError, failing: _Item) -> None:
        """Dead-letter the record whose bytes failed (all of them if the stream
        never produced audio) and the queued ones after it. At the end of the
        input, the bytes that failed are the last ones fed."""
        self.failed = error
        culprit = failing if failing.audio else (self._last_fed or failing)
        rejected = []
        if culprit.offset is not None:
            rejected.append(
                Rejected(culprit.offset, culprit.record, "undecodable_audio", str(error))
            )
        unproven = self._unproven.records if self._unproven else []
        rejected += [
            Rejected(offset, record, "undecodable_audio", f"no audio decoded: {error}")
            for offset, record in unproven
            if offset != culprit.offset
        ]
        for item in self._queue:
            if item is culprit or item.offset is None:
                continue
            if culprit.offset is not None and item.offset < culprit.offset:
                rejected.append(Rejected(item.offset, item.record, "undecodable_audio", str(error)))
            else:
                detail = "earlier audio is undecodable"
                rejected.append(Rejected(item.offset, item.record, "session_failed", detail))
        self.rejected = sorted(rejected, key=lambda r: r.offset)
        self._queue.clear()
        self.close()

    def _push_pcm(self, pcm: bytes) -> None:
        if not pcm:
            return
        self._unproven = None
        if not self.streams:
            channels = self._decoder.source_channels if self._decoder else None
            self._open_streams(max(1, channels or 1))
        self._distribute(pcm, 2)

    def _push_raw(self, audio: bytes) -> None:
        if not audio:
            return
        if self._expand is not None:
            self._distribute(self._expand(audio), 2)  # one byte per G.711 sample
        else:
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

    def flush(self, *, user: bool, only_uncovered: bool = False) -> list[str]:
        """Queue a flush on every stream (``only_uncovered``: on those holding
        uncovered audio, a flush of nothing needs no upstream); returns the ids."""
        return [
            stream.request_flush(user=user)
            for stream in self.streams
            if not only_uncovered or stream.uncovered_frames > 0
        ]

    # ------------------------------------------------------------------ coverage

    @property
    def settled(self) -> bool:
        """Every stream's audio is covered, no flush is pending and nothing is queued."""
        return not self._queue and all(
            s.uncovered_frames == 0 and s.pending_flushes == 0 for s in self.streams
        )

    @property
    def durable(self) -> bool:
        """Settled, and every event accounting for it acknowledged."""
        return self.settled and all(s.durable >= s.frames_in for s in self.streams)

    def position(self) -> Position | None:
        """Where a new owner would resume now, from the coverage whose events the
        broker has acknowledged; None before the first record. Forgets the
        marks and decoder restart points that lie before it."""
        if self._first_offset is None:
            return None
        restart = self._restart_point()
        offset, record_byte = self._first_offset, self._mark_byte
        queued = next((i.offset for i in self._queue if i.offset is not None), None)
        if queued is not None:
            offset = queued
        elif self._marks:
            offset = self._marks[-1].offset + 1
        while self._marks:
            mark = self._marks[0]
            if (
                mark.byte_end > restart.byte
                or mark.end
                or any(self._pending(f) for f in mark.flushes)
            ):
                offset, record_byte = mark.offset, mark.byte_start
                break
            self._marks.popleft()
        self._first_offset = offset
        streams = tuple(_saved(s) for s in self.streams) or self._resumed
        return Position(offset, record_byte, restart, streams)

    def _pending(self, flush_id: str) -> bool:
        return any(s.is_pending(flush_id) for s in self.streams)

    def _restart_point(self) -> RestartPoint:
        """The latest input byte from which decoding can restart and still cover
        everything not yet durably covered."""
        if not self.streams:
            return self.origin
        covered = min(s.durable for s in self.streams)
        if self.config.encoding != "auto":
            frame_bytes = _SAMPLE_WIDTH[self.config.encoding] * self.config.channels
            return RestartPoint(byte=(covered - self._epoch_frame) * frame_bytes, frame=covered)
        decoder = self._decoder
        point = decoder.restart_point_before(covered) if decoder else None
        if point is None or point.byte <= self.origin.byte:
            return self.origin
        decoder.forget_restart_points(covered)  # type: ignore[union-attr]
        return point

    @property
    def uncovered_seconds(self) -> float:
        """Largest amount of uncovered audio on any stream, in seconds."""
        return max((s.uncovered_frames / s.rate for s in self.streams), default=0.0)

    @property
    def audio_seconds(self) -> float:
        """Session time reached so far, in seconds (from the session's start)."""
        return max(
            (s.frames_in / s.rate for s in self.streams), default=self.origin.frame / self._rate
        )

    def close(self) -> None:
        """Release the decoder thread (without waiting for it); call once the
        source is over."""
        if self._decoder is not None:
            self._decoder.close(wait=False)


def _saved(stream: ChannelStream) -> StreamCheckpoint:
    return StreamCheckpoint(
        covered=stream.durable,
        turn_index=stream.durable_turn,
        flush_seq=stream.flush_seq,
        finals=stream.durable_finals,
        connections=stream.stats.connections,
        reconnects=stream.stats.reconnects,
    )
