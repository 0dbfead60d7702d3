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
from workers.errors import InputError
from workers.pump import SessionRunner
from workers.session import Session
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
    ) -> None:
        self._settings = settings
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

    # ------------------------------------------------------------------ records

    async def handle(self, record: Record) -> None:
        """Process one input record; never raises for bad input.

        While draining, records are left unprocessed and unacked: the next
        owner of the partition reads them again from the committed offset.
        """
        if self._draining:
            return
        entry = _Entry(record)
        self._queues.setdefault(record.partition, deque()).append(entry)
        try:
            self._process(entry)
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
        self._feed(live, record.value or b"")
        if headers.kind == "flush":
            live.runner.session.flush(user=True)
        live.runner.session.mark(record.offset)
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
        config = headers.session_config()
        runner = self._runner(Session(session_id, config, upstream_rate=self._upstream_rate))
        carrier = {"traceparent": headers.traceparent or "", "tracestate": headers.tracestate or ""}
        span = self._telemetry.session_span(session_id, {k: v for k, v in carrier.items() if v})
        live = _Live(runner=runner, span=span, partition=record.partition)
        self._sessions[session_id] = live
        self._telemetry.active_sessions.add(1)
        asyncio.get_running_loop().create_task(self._started(live, config.endpoint))
        return live

    def _runner(self, session: Session) -> SessionRunner:
        return SessionRunner(
            session,
            connect=self._connect,
            policy=self._policy,
            emitter=self,
            on_progress=self._ack_wakeup.set,
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
        streams = [s for r in (*live.earlier, *live.retiring, runner) for s in r.session.streams]
        if runner.failed is None:
            await self.emit(
                SessionEvent(
                    event_id=event_id(session_id, None, 0, "session_ended"),
                    session_id=session_id,
                    type="session_ended",
                    audio_seconds=round(runner.session.audio_seconds, 3),
                    finals=sum(s.stats.finals for s in streams),
                    reconnects=sum(s.stats.reconnects for s in streams),
                    detail=None if settled else "end timeout: some audio was not confirmed",
                ),
                runner,
            )
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

    # ------------------------------------------------------------------ acks

    async def ack_ready(self) -> None:
        """Ack, per partition and in order, every record whose audio is covered."""
        for live in self._sessions.values():
            for runner in (live.runner, *live.retiring):
                covered = runner.session.covered_offset()
                if covered is not None:
                    runner.covered_upto = max(runner.covered_upto, covered)
        for queue in self._queues.values():
            while queue and self._done(queue[0]):
                await self._ack(queue.popleft().record.handle)

    @staticmethod
    def _done(entry: _Entry) -> bool:
        runner = entry.runner
        if entry.offset_done or runner is None or runner.finished or runner.failed:
            return True
        return entry.record.offset <= runner.covered_upto

    async def run_acker(self) -> None:
        """Background task: ack whenever some session made progress."""
        while True:
            await self._ack_wakeup.wait()
            self._ack_wakeup.clear()
            await self.ack_ready()

    # ------------------------------------------------------------------ housekeeping

    async def tick(self) -> None:
        """Periodic: flush quiet sessions, bound uncovered audio, expire idle ones."""
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
        await self.ack_ready()

    def _needs_flush(self, live: _Live, quiet: float) -> bool:
        session = live.runner.session
        if not session.streams or any(s.pending_flushes for s in session.streams):
            return False
        uncovered = session.uncovered_seconds
        if uncovered <= 0:
            return False
        return quiet >= self._settings.idle_flush_s or uncovered >= self._settings.max_uncovered_s

    async def revoke(self, partitions: set[int]) -> None:
        """Partitions were taken away: stop their sessions without acking the
        uncovered records (the new owner replays them from the committed offset)."""
        for session_id, live in list(self._sessions.items()):
            if live.partition in partitions:
                await live.runner.stop()
                live.span.end()
                del self._sessions[session_id]
                self._telemetry.active_sessions.add(-1)
        for partition in partitions:
            self._queues.pop(partition, None)

    async def drain(self, timeout_s: float) -> bool:
        """Graceful stop (SIGTERM): take no new audio, flush every session, wait
        up to ``timeout_s`` for the finals, ack what is covered, close.

        Returns True when every session's audio was covered in time. The
        caller commits afterwards (Faust commits acked offsets on stop).
        """
        self._draining = True
        lives = [live for live in self._sessions.values() if live.runner.failed is None]
        for live in lives:
            if live.runner.session.streams and live.runner.session.uncovered_seconds > 0:
                live.runner.session.flush(user=False)
                live.runner.wake()
        results = await asyncio.gather(
            *(live.runner.wait_for(_flushed(live.runner), timeout_s) for live in lives)
        )
        await self.ack_ready()
        await self.shutdown()
        log.info("drained %d sessions (%d fully covered)", len(lives), sum(results))
        return all(results)

    async def shutdown(self) -> None:
        """Stop every session (a drain that flushes first is the caller's choice)."""
        for live in list(self._sessions.values()):
            if live.ending is not None:
                live.ending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await live.ending
            await live.runner.stop()
        self._sessions.clear()


def _flushed(runner: SessionRunner) -> Callable[[], bool]:
    return lambda: all(s.pending_flushes == 0 for s in runner.session.streams)


def _session_id(key: bytes | None) -> str:
    if not key:
        raise InputError("missing_key", "the record has no key (session id)")
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("bad_key", "the record key is not UTF-8") from None
