"""Sessions of one worker and the in-order acks of its partitions.

:class:`Registry` is fed every ``stt.audio`` record (by the Faust agent) and:

- routes it to its session's :class:`~workers.pump.SessionRunner`, creating
  the session on its first record (configuration headers are read there);
- dead-letters records that cannot be processed, with a reason, and moves on
  (ARCHITECTURE.md: a bad record never stops its partition);
- acks records strictly in partition order, and only once their audio is
  covered (finals or a confirmed flush), so the committed offset never passes
  uncovered audio. Acks go in order because faust-streaming 0.15 can skip an
  in-flight offset when acks arrive out of order (faust-streaming #606).

It knows nothing of Faust beyond two callables: ``ack(event)`` and the
:class:`Sink` that produces records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry.trace import Span

from schemas.envelope import (
    BadHeader,
    RecordHeaders,
    SessionConfig,
    decode_headers,
    parse_headers,
)
from schemas.events import (
    SessionEvent,
    TranscriptEvent,
    TurnEvent,
    cloudevent_headers,
    event_id,
)
from workers.checkpoint import Checkpoint
from workers.errors import InputError
from workers.pump import SessionRunner
from workers.session import Session, stream_rate
from workers.settings import Settings
from workers.stream import Event
from workers.telemetry import Telemetry
from workers.upstream import ConnectOptions, RetryPolicy

log = logging.getLogger(__name__)
Headers = list[tuple[str, bytes]]


class Sink(Protocol):
    """Produces one record and waits for the broker's acknowledgement."""

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers
    ) -> None: ...


class CheckpointStore(Protocol):
    """The per-session checkpoint table (a changelog-backed Faust table in the worker)."""

    def get(self, session_id: str) -> Checkpoint | None: ...

    def values(self) -> list[Checkpoint]: ...

    async def put(self, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint``; return once it is durable (acknowledged by the broker)."""

    async def delete(self, partition: int, session_id: str) -> None:
        """Drop the entry (a tombstone in the changelog)."""


class MemoryCheckpoints:
    """A :class:`CheckpointStore` in a dict (tests, and nothing to resume from)."""

    def __init__(self) -> None:
        self.data: dict[str, Checkpoint] = {}

    def get(self, session_id: str) -> Checkpoint | None:
        return self.data.get(session_id)

    def values(self) -> list[Checkpoint]:
        return list(self.data.values())

    async def put(self, checkpoint: Checkpoint) -> None:
        self.data[checkpoint.session_id] = checkpoint

    async def delete(self, partition: int, session_id: str) -> None:
        self.data.pop(session_id, None)


class Offsets(Protocol):
    """The consumer's view of a partition of ``stt.audio``."""

    def committed(self, partition: int) -> int | None: ...

    def highwater(self, partition: int) -> int | None: ...


class _NoOffsets:
    def committed(self, partition: int) -> int | None:
        return None

    def highwater(self, partition: int) -> int | None:
        return None


class _Skip(Exception):
    """The record was processed before a takeover (below the session's checkpoint)."""


ALL = 1 << 62  # ack_before of a runner whose every record may be acked


@dataclass(frozen=True)
class Record:
    """What the registry needs of one input record (transport-neutral)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    handle: Any = None  # the transport's event, passed back to ``ack``


@dataclass
class _Entry:
    record: Record
    runner: SessionRunner | None = None
    offset_done: bool = False


@dataclass
class _Live:
    runner: SessionRunner
    span: Span
    partition: int
    ending: asyncio.Task[None] | None = field(default=None)
    # runners replaced by a configuration change, finishing their audio
    retiring: list[SessionRunner] = field(default_factory=list)
    earlier: list[SessionRunner] = field(default_factory=list)  # for session_ended totals
    prior_finals: int = 0  # from before a takeover (checkpoint)
    prior_reconnects: int = 0
    last_offset: int = -1
    checkpoint: Checkpoint | None = None  # the last one written
    checkpoint_at: float = 0.0

    @property
    def oldest(self) -> SessionRunner:
        """The runner whose audio comes first (the one a checkpoint describes)."""
        return self.retiring[0] if self.retiring else self.runner

    def totals(self) -> tuple[int, int]:
        """(finals, reconnects) of the whole session so far."""
        streams = [
            s for r in (*self.earlier, *self.retiring, self.runner) for s in r.session.streams
        ]
        return (
            self.prior_finals + sum(s.stats.finals for s in streams),
            self.prior_reconnects + sum(s.stats.reconnects for s in streams),
        )


class Registry:
    """All sessions of this worker. Call :meth:`handle` per record in partition
    order; run :meth:`tick` periodically; :meth:`revoke` on rebalance;
    :meth:`shutdown` on exit."""

    def __init__(
        self,
        settings: Settings,
        sink: Sink,
        ack: Callable[[Any], Awaitable[None]],
        telemetry: Telemetry,
        source: str = "urn:reson8-kafka:worker",
        *,
        checkpoints: CheckpointStore | None = None,
        offsets: Offsets | None = None,
    ) -> None:
        self._settings = settings
        self._checkpoints: CheckpointStore = checkpoints or MemoryCheckpoints()
        self._offsets: Offsets = offsets or _NoOffsets()
        self._tombstones: dict[str, tuple[int, int]] = {}  # session -> (partition, end offset)
        self._seen: dict[int, int] = {}  # partition -> highest offset handled
        self._assigned: set[int] = set()
        self._loading: dict[int, asyncio.Event] = {}  # partitions whose checkpoints load
        self._dirty: set[str] = set()  # sessions with upstream progress since the last checkpoint
        self._last_scan = 0.0
        self._sink = sink
        self._ack = ack
        self._telemetry = telemetry
        self._source = source
        self._sessions: dict[str, _Live] = {}
        self._failed: dict[str, float] = {}  # session id -> last record time (no retry storm)
        self._queues: dict[int, deque[_Entry]] = {}
        self._connect = ConnectOptions(
            base_url=settings.api_url,
            api_key=settings.api_key.get_secret_value(),
            open_timeout_s=settings.connect_timeout_s,
            ping_interval_s=settings.ping_interval_s,
            ping_timeout_s=settings.ping_timeout_s,
        )
        self._policy = RetryPolicy(
            initial_s=settings.retry_initial_s,
            max_s=settings.retry_max_s,
            attempts=settings.retry_attempts,
        )
        self._topics = {
            "transcript": settings.topic("stt.transcripts"),
            "turn": settings.topic("stt.turns"),
            "session": settings.topic("stt.sessions"),
        }
        self._dlq = settings.topic("stt.audio.dlq")
        self._upstream_rate = settings.upstream_rate
        self._ack_wakeup = asyncio.Event()
        self._draining = False

    @property
    def active(self) -> int:
        return len(self._sessions)

    @property
    def loading(self) -> bool:
        """True while some assigned partition's checkpoints are being loaded."""
        return bool(self._loading)

    # ------------------------------------------------------------------ records

    async def handle(self, record: Record) -> None:
        """Process one input record; never raises for bad input.

        While draining, records are left unprocessed and unacked: the next
        owner of the partition reads them again from the committed offset.
        """
        if self._draining:
            return
        loading = self._loading.get(record.partition)
        if loading is not None:
            await loading.wait()
        entry = _Entry(record)
        self._queues.setdefault(record.partition, deque()).append(entry)
        self._seen[record.partition] = max(self._seen.get(record.partition, -1), record.offset)
        try:
            self._process(entry)
        except _Skip:
            entry.offset_done = True
        except (InputError, BadHeader) as exc:
            entry.offset_done = True
            await self._dead_letter(record, exc.code, exc.detail, entry.runner)
        await self.ack_ready()

    def _process(self, entry: _Entry) -> None:
        record = entry.record
        session_id = _session_id(record.key)
        if record.value is not None and len(record.value) > self._settings.max_record_bytes:
            raise InputError(
                "oversized", f"{len(record.value)} bytes > {self._settings.max_record_bytes}"
            )
        headers = parse_headers(decode_headers(record.headers))
        live = self._session_for(session_id, headers, record)
        entry.runner = live.runner
        if live.runner.failed is not None or live.ending is not None:
            entry.runner = None
            raise InputError("session_closed", "the session has failed or is ending")
        live.runner.last_input = time.monotonic()
        live.last_offset = record.offset
        self._feed(live, record.value or b"")
        flushes = live.runner.session.flush(user=True) if headers.kind == "flush" else []
        live.runner.session.mark(record.offset, flushes=flushes, end=headers.kind == "end")
        live.runner.wake()
        if headers.kind == "end":
            live.ending = asyncio.create_task(self._end(session_id, live))

    def _feed(self, live: _Live, audio: bytes) -> None:
        session = live.runner.session
        before = session.audio_seconds
        session.feed(audio)
        self._telemetry.audio_in.add(max(0.0, session.audio_seconds - before))

    def _session_for(self, session_id: str, headers: RecordHeaders, record: Record) -> _Live:
        if session_id in self._failed:
            self._failed[session_id] = time.monotonic()
            raise InputError("session_failed", "the upstream refused this session")
        live = self._sessions.get(session_id)
        if live is not None and not live.runner.finished:
            if headers.has_config and live.ending is None and live.runner.failed is None:
                config = live.runner.session.config.with_overrides(headers.config_headers)
                if config != live.runner.session.config:
                    self._restart(live, config)
            return live
        saved = self._saved(session_id, record)
        if saved is not None:
            session = Session(
                session_id,
                saved.config,
                upstream_rate=self._upstream_rate,
                start_ms=saved.config_start_ms,
                resume=saved,
            )
        else:
            session = Session(
                session_id, headers.session_config(), upstream_rate=self._upstream_rate
            )
        carrier = {"traceparent": headers.traceparent or "", "tracestate": headers.tracestate or ""}
        span = self._telemetry.session_span(session_id, {k: v for k, v in carrier.items() if v})
        live = _Live(runner=self._runner(session), span=span, partition=record.partition)
        self._sessions[session_id] = live
        self._telemetry.active_sessions.add(1)
        if saved is None:
            asyncio.get_running_loop().create_task(self._started(live, session.config.endpoint))
            return live
        live.prior_finals, live.prior_reconnects = saved.prior_finals, saved.prior_reconnects
        live.checkpoint = saved
        log.info("session %s resumed at offset %d (%s)", session_id, record.offset, saved.state)
        if headers.has_config:
            config = saved.config.with_overrides(headers.config_headers)
            if config != saved.config:
                self._restart(live, config)
        return live

    def _saved(self, session_id: str, record: Record) -> Checkpoint | None:
        """The checkpoint to resume ``session_id`` from, if another owner left one.

        Raises :class:`_Skip` for a record the checkpoint says was done.
        """
        saved = self._checkpoints.get(session_id)
        if saved is None or saved.partition != record.partition:
            return None
        if record.offset < saved.offset:
            raise _Skip
        if saved.state == "ended":
            return None  # the id is used again for a new session
        return saved

    def _runner(self, session: Session) -> SessionRunner:
        return SessionRunner(
            session,
            connect=self._connect,
            policy=self._policy,
            emitter=self,
            on_progress=lambda: self._progressed(session.session_id),
            on_latency=self._telemetry.upstream_latency.record,
        )

    def _restart(self, live: _Live, config: SessionConfig) -> None:
        """Configuration headers changed: finish the current upstream connection(s)
        and start new ones at this point (ARCHITECTURE.md, "Input"). Session time
        goes on from the audio received so far."""
        old = live.runner
        start_ms = round(old.session.audio_seconds * 1000)
        session = Session(
            old.session.session_id, config, upstream_rate=self._upstream_rate, start_ms=start_ms
        )
        live.runner = self._runner(session)
        live.retiring.append(old)
        asyncio.get_running_loop().create_task(self._retire(live, old))

    async def _retire(self, live: _Live, old: SessionRunner) -> None:
        await old.end(self._settings.end_timeout_s)
        live.retiring.remove(old)
        live.earlier.append(old)
        await self._checkpoint(live, force=True)  # the next epoch, before old records go
        old.ack_before = ALL
        self._ack_wakeup.set()

    async def _started(self, live: _Live, endpoint: str) -> None:
        sid = live.runner.session.session_id
        await self.emit(
            SessionEvent(
                event_id=event_id(sid, None, 0, "session_started"),
                session_id=sid,
                type="session_started",
                endpoint=endpoint,
            ),
            live.runner,
        )

    async def _end(self, session_id: str, live: _Live) -> None:
        settled = await live.runner.end(self._settings.end_timeout_s)
        await self._finish(session_id, live, settled)

    async def _finish(self, session_id: str, live: _Live, settled: bool) -> None:
        runner = live.runner
        for old in list(live.retiring):
            await old.stop()
        finals, reconnects = live.totals()
        streams = [s for r in (*live.earlier, *live.retiring, runner) for s in r.session.streams]
        held = max((s.stats.max_uncovered / s.rate for s in streams), default=0.0)
        log.info(
            "session %s ended: %.1f s of audio, %d finals, at most %.2f s held uncovered",
            session_id,
            runner.session.audio_seconds,
            finals,
            held,
        )
        if runner.failed is None:
            await self.emit(
                SessionEvent(
                    event_id=event_id(session_id, None, 0, "session_ended"),
                    session_id=session_id,
                    type="session_ended",
                    audio_seconds=round(runner.session.audio_seconds, 3),
                    finals=finals,
                    reconnects=reconnects,
                    detail=None if settled else "end timeout: some audio was not confirmed",
                ),
                runner,
            )
        await self._ended(live, session_id, live.last_offset + 1, runner.session.config)
        for done in (*live.earlier, *live.retiring, runner):
            done.ack_before = ALL
        live.span.end()
        if self._sessions.get(session_id) is live:
            del self._sessions[session_id]
            self._telemetry.active_sessions.add(-1)
        self._ack_wakeup.set()

    # ------------------------------------------------------------------ output

    async def emit(self, event: Event, runner: SessionRunner) -> None:
        """Produce ``event`` to its topic with trace and CloudEvents headers."""
        live = self._sessions.get(event.session_id)
        parent = live.span if live is not None else None
        headers = cloudevent_headers(event, self._source)
        if parent is not None:
            span = self._telemetry.child_span(
                f"emit {event.type}", parent, {"stt.event_id": event.event_id}
            )
            headers += self._telemetry.headers_of(span)
            span.end()
        if isinstance(event, TranscriptEvent) and event.is_final and event.duration_ms:
            self._telemetry.audio_transcribed.add(event.duration_ms / 1000)
        topic = self._topic_of(event)
        await self._sink.send(topic, event.session_id.encode(), event.to_json_bytes(), headers)

    def _topic_of(self, event: Event) -> str:
        if isinstance(event, TranscriptEvent):
            return self._topics["transcript"]
        if isinstance(event, TurnEvent):
            return self._topics["turn"]
        return self._topics["session"]

    async def _dead_letter(
        self, record: Record, code: str, detail: str, runner: SessionRunner | None
    ) -> None:
        headers = [
            *record.headers,
            ("stt-error-code", code.encode()),
            ("stt-error-detail", detail.encode("ascii", "replace")[:1000]),
            ("stt-source-topic", record.topic.encode()),
            ("stt-source-partition", str(record.partition).encode()),
            ("stt-source-offset", str(record.offset).encode()),
        ]
        await self._sink.send(self._dlq, record.key, record.value, headers)
        self._telemetry.dlq_records.add(1, {"code": code})
        log.warning(
            "dead-lettered %s[%d]@%d: %s", record.topic, record.partition, record.offset, code
        )
        if runner is not None and record.key:
            sid = record.key.decode("utf-8", "replace")
            await self.emit(
                SessionEvent(
                    event_id=event_id(sid, None, record.offset, f"warning:{code}"),
                    session_id=sid,
                    type="session_warning",
                    code=code,
                    detail=detail,
                ),
                runner,
            )

    # ------------------------------------------------------------------ checkpoints

    async def _checkpoint(self, live: _Live, *, force: bool = False) -> None:
        """Write the session's checkpoint if its resume position moved (at most
        every ``checkpoint_interval_s`` unless ``force``), then let its records
        below the checkpoint be acked: never the other way round."""
        runner = live.oldest
        if runner.failed is not None:
            return
        earlier = [s for r in live.earlier for s in r.session.streams]
        checkpoint = runner.session.checkpoint(
            live.partition,
            prior_finals=live.prior_finals + sum(s.durable_finals for s in earlier),
            prior_reconnects=live.prior_reconnects + sum(s.stats.reconnects for s in earlier),
        )
        if checkpoint is None:
            return
        if not checkpoint.same_position(live.checkpoint):
            now = time.monotonic()
            if not force and now - live.checkpoint_at < self._settings.checkpoint_interval_s:
                return
            await self._checkpoints.put(checkpoint)
            live.checkpoint, live.checkpoint_at = checkpoint, now
        runner.ack_before = max(runner.ack_before, checkpoint.offset)

    async def _ended(
        self, live: _Live, session_id: str, offset: int, config: SessionConfig
    ) -> None:
        """The session is over: records below ``offset`` must never start it again.
        The entry is deleted once the committed offset has passed them."""
        await self._checkpoints.put(
            Checkpoint(
                session_id=session_id,
                partition=live.partition,
                state="ended",
                offset=offset,
                config=config,
                updated_at=time.time(),
            )
        )
        self._tombstones[session_id] = (live.partition, offset)

    async def _checkpoint_all(self, lives: list[_Live], *, force: bool) -> None:
        """Checkpoint many sessions at once; a failed write only delays that
        session's acks (it is retried on the next tick)."""
        results = await asyncio.gather(
            *(self._checkpoint(live, force=force) for live in lives), return_exceptions=True
        )
        for live, result in zip(lives, results, strict=True):
            if isinstance(result, Exception):
                sid = live.runner.session.session_id
                log.warning("checkpoint of session %s failed: %r", sid, result)

    async def _expire_checkpoints(self) -> None:
        """Delete ended entries the commit has passed; end sessions this worker
        inherited but never heard from again (their audio was all covered)."""
        for session_id, (partition, offset) in list(self._tombstones.items()):
            committed = self._offsets.committed(partition)
            if committed is not None and committed >= offset:
                del self._tombstones[session_id]
                saved = self._checkpoints.get(session_id)
                if saved is not None and saved.state == "ended" and saved.offset == offset:
                    await self._checkpoints.delete(partition, session_id)
        now = time.time()
        if now - self._last_scan < self._settings.idle_timeout_s / 4:
            return
        self._last_scan = now
        for saved in self._checkpoints.values():
            if saved.session_id in self._sessions or saved.partition not in self._assigned:
                continue
            if saved.state == "ended":
                self._tombstones.setdefault(saved.session_id, (saved.partition, saved.offset))
            elif now - saved.updated_at >= self._settings.idle_timeout_s and self._caught_up(
                saved.partition
            ):
                await self._expire_orphan(saved)

    def _caught_up(self, partition: int) -> bool:
        high = self._offsets.highwater(partition)
        return high is not None and self._seen.get(partition, -1) >= high - 1

    async def _expire_orphan(self, saved: Checkpoint) -> None:
        """A resumed-from checkpoint whose session sent nothing more: it ended
        idle on its previous owner's watch. Emit what that owner would have."""
        finals = saved.prior_finals + sum(s.finals for s in saved.streams)
        reconnects = saved.prior_reconnects + sum(s.reconnects for s in saved.streams)
        rate = stream_rate(saved.config, self._upstream_rate)
        await self._sink.send(
            self._topics["session"],
            saved.session_id.encode(),
            SessionEvent(
                event_id=event_id(saved.session_id, None, 0, "session_ended"),
                session_id=saved.session_id,
                type="session_ended",
                audio_seconds=round(max((s.covered for s in saved.streams), default=0) / rate, 3),
                finals=finals,
                reconnects=reconnects,
                detail="idle timeout (taken over from another worker)",
            ).to_json_bytes(),
            [],
        )
        await self._checkpoints.put(
            saved.model_copy(update={"state": "ended", "updated_at": time.time()})
        )
        self._tombstones[saved.session_id] = (saved.partition, saved.offset)

    # ------------------------------------------------------------------ acks

    async def ack_ready(self) -> None:
        """Ack, per partition and in order, every record below its session's
        durable checkpoint."""
        for queue in self._queues.values():
            while queue and self._done(queue[0]):
                await self._ack(queue.popleft().record.handle)

    @staticmethod
    def _done(entry: _Entry) -> bool:
        runner = entry.runner
        if entry.offset_done or runner is None or runner.failed:
            return True
        return entry.record.offset < runner.ack_before

    def _progressed(self, session_id: str) -> None:
        self._dirty.add(session_id)
        self._ack_wakeup.set()

    async def run_acker(self) -> None:
        """Background task: whenever sessions made progress, checkpoint them at
        once (so a takeover replays as little as possible, and re-emits as few
        finals) and ack what the checkpoints cover."""
        while True:
            await self._ack_wakeup.wait()
            self._ack_wakeup.clear()
            dirty, self._dirty = self._dirty, set()
            lives = [self._sessions[s] for s in dirty if s in self._sessions]
            await self._checkpoint_all([live for live in lives if live.ending is None], force=True)
            await self.ack_ready()

    # ------------------------------------------------------------------ housekeeping

    async def tick(self) -> None:
        """Periodic: flush quiet sessions, bound uncovered audio, expire idle ones,
        write checkpoints and ack what they cover."""
        now = time.monotonic()
        for session_id, seen in list(self._failed.items()):
            if now - seen >= self._settings.idle_timeout_s:
                del self._failed[session_id]
        for session_id, live in list(self._sessions.items()):
            if live.ending is not None or live.runner.finished:
                continue
            if live.runner.failed is not None:
                self._failed[session_id] = now
                await self._finish(session_id, live, False)
                continue
            quiet = now - live.runner.last_input
            if quiet >= self._settings.idle_timeout_s:
                live.ending = asyncio.create_task(self._end(session_id, live))
            elif self._needs_flush(live, quiet):
                live.runner.session.flush(user=False)
                live.runner.wake()
        await self._checkpoint_all(
            [live for live in self._sessions.values() if live.ending is None], force=False
        )
        await self._expire_checkpoints()
        await self.ack_ready()

    def _needs_flush(self, live: _Live, quiet: float) -> bool:
        """Flush when the input paused, at a silence once enough audio is
        uncovered (realtime; on turns a flush would end the turn), or - the
        hard bound - when too much audio is uncovered, silence or not."""
        session = live.runner.session
        if not session.streams or any(s.pending_flushes for s in session.streams):
            return False
        uncovered = session.uncovered_seconds
        if uncovered <= 0:
            return False
        if quiet >= self._settings.idle_flush_s or uncovered >= self._settings.max_uncovered_s:
            return True
        return (
            session.config.endpoint == "realtime"
            and uncovered >= self._settings.silence_flush_after_s
            and all(
                s.flushable_at_silence(self._settings.silence_flush_ms)
                for s in session.streams
                if s.uncovered_frames
            )
        )

    def assigning(self, partitions: set[int]) -> None:
        """Partitions were assigned; hold their records until :meth:`assign`
        (their checkpoints are being loaded)."""
        for partition in partitions:
            self._loading.setdefault(partition, asyncio.Event())

    def assign(self, partitions: set[int]) -> None:
        """The checkpoints of ``partitions`` are loaded: process their records."""
        self._assigned |= partitions
        for partition in partitions:
            gate = self._loading.pop(partition, None)
            if gate is not None:
                gate.set()

    async def revoke(self, partitions: set[int], timeout_s: float) -> bool:
        """Partitions were taken away (rebalance): drain their sessions within
        ``timeout_s`` (flush, wait for finals, emit, checkpoint) and close them.
        The new owner resumes from the checkpoints; nothing is acked here
        (Faust has already forgotten these partitions' acks)."""
        self._assigned -= partitions
        lives = {sid: live for sid, live in self._sessions.items() if live.partition in partitions}
        settled = await self._quiesce(list(lives.values()), timeout_s)
        for session_id, live in lives.items():
            await _close(live)
            live.span.end()
            if self._sessions.get(session_id) is live:
                del self._sessions[session_id]
                self._telemetry.active_sessions.add(-1)
        for partition in partitions:
            self._queues.pop(partition, None)
            self._seen.pop(partition, None)
        for session_id, (partition, _) in list(self._tombstones.items()):
            if partition in partitions:
                del self._tombstones[session_id]
        log.info(
            "revoked %s: drained %d sessions (%d settled)", sorted(partitions), len(lives), settled
        )
        return settled == len(lives)

    async def _quiesce(self, lives: list[_Live], timeout_s: float) -> int:
        """Flush every session's silent streams, wait up to ``timeout_s`` for
        the flushes to be confirmed, then checkpoint them. Returns how many
        settled in time."""
        lives = [live for live in lives if live.runner.failed is None]
        for live in lives:
            for runner in (*live.retiring, live.runner):
                # Only where the tail is silent: a flush mid-word would cut it
                # in two; uncovered speech is replayed by the next owner.
                for stream in runner.session.streams:
                    if stream.flushable_at_silence(self._settings.silence_flush_ms):
                        stream.request_flush(user=False)
                runner.wake()
        results = await asyncio.gather(*(_settle(live, timeout_s) for live in lives))
        await self._checkpoint_all([live for live in lives if live.ending is None], force=True)
        return sum(results)

    async def drain(self, timeout_s: float) -> bool:
        """Graceful stop (SIGTERM): take no new audio, flush every session, wait
        up to ``timeout_s`` for the finals, checkpoint, ack what is covered, close.

        Returns True when every session's audio was covered in time. The
        caller commits afterwards (Faust commits acked offsets on stop).
        """
        self._draining = True
        lives = list(self._sessions.values())
        settled = await self._quiesce(lives, timeout_s)
        await self.ack_ready()
        await self.shutdown()
        healthy = sum(1 for live in lives if live.runner.failed is None)
        log.info("drained %d sessions (%d fully covered)", len(lives), settled)
        return settled == healthy

    async def shutdown(self) -> None:
        """Stop every session (a drain that flushes first is the caller's choice)."""
        for live in list(self._sessions.values()):
            await _close(live)
        self._sessions.clear()


async def _close(live: _Live) -> None:
    """Cancel a pending end and stop every runner of the session."""
    if live.ending is not None:
        live.ending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await live.ending
    for runner in (*live.retiring, live.runner):
        await runner.stop()


async def _settle(live: _Live, timeout_s: float) -> bool:
    """Wait (together, up to ``timeout_s``) until every runner of ``live`` has
    its flushes confirmed."""
    runners = (*live.retiring, live.runner)
    done = await asyncio.gather(*(r.wait_for(_flushed(r), timeout_s) for r in runners))
    return all(done)


def _flushed(runner: SessionRunner) -> Callable[[], bool]:
    return lambda: all(s.pending_flushes == 0 for s in runner.session.streams)


def _session_id(key: bytes | None) -> str:
    if not key:
        raise InputError("missing_key", "the record has no key (session id)")
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("bad_key", "the record key is not UTF-8") from None
