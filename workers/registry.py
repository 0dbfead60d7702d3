"""Routing of input records to sessions, and the partition glue.

:class:`Registry` is fed every ``stt.audio`` record (by the Faust agent) and
routes it to its session's :class:`~workers.pump.SessionPump`, creating the
session on its first record (or resuming it from the checkpoint another
worker left). It never raises: a record it cannot use is dead-lettered with a
code (ARCHITECTURE.md: a bad record never stops its partition), and anything
unexpected while handling one fails that record's session only.

The rules live elsewhere: what a session does in ``workers.session``, which
offsets may be acked in ``workers.ledger`` (acks go in partition order,
faust-streaming #606), input time in ``workers.clock``, checkpoints in
``workers.checkpointer``, every output record in ``workers.publisher``. This
module keeps the glue: assignment (records of a partition wait until its
checkpoints are loaded), revocation and SIGTERM drains, the periodic tick.

It knows nothing of Faust beyond two callables: ``ack(handle)`` and the
:class:`Offsets` of the consumer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas.envelope import BadHeader, RecordHeaders, decode_headers, parse_headers
from workers.checkpoint import Checkpoint
from workers.checkpointer import Checkpointer, CheckpointStore, MemoryCheckpoints
from workers.clock import PartitionClock
from workers.errors import InputError
from workers.ledger import OffsetLedger
from workers.link import RetryPolicy
from workers.publisher import Publisher, Record
from workers.pump import Connector, SessionPump
from workers.session import Session, SessionPolicy
from workers.settings import Settings
from workers.source import Rejected
from workers.telemetry import Telemetry
from workers.upstream import ConnectOptions, open_connection

log = logging.getLogger(__name__)

__all__ = ["MemoryCheckpoints", "Offsets", "Record", "Registry", "policy_of"]

RUN_SLICE_S = 0.01  # the longest a run of records holds the event loop at once
INPUT_DELAY_SAMPLING = 8  # one run in 8 is timed (a histogram record costs ~10 us)


class Offsets(Protocol):
    """The consumer's view of a partition of ``stt.audio``."""

    def committed(self, partition: int) -> int | None: ...

    def highwater(self, partition: int) -> int | None: ...


class _NoOffsets:
    def committed(self, partition: int) -> int | None:
        return None

    def highwater(self, partition: int) -> int | None:
        return None


@dataclass
class _Partition:
    ledger: OffsetLedger = field(default_factory=OffsetLedger)
    clock: PartitionClock = field(default_factory=PartitionClock)
    assigned_at: float = field(default_factory=time.monotonic)
    fed: int = -1  # highest offset handled
    held: bool = False  # revoked, the new assignment not known yet: no acks
    replayed: int = -1  # came back: records up to here were handled before

    def rejoin(self) -> None:
        """The partition came back after a rebalance: Faust reads it again from
        the committed offset, with acks of a new generation."""
        self.ledger = OffsetLedger()
        self.held = False
        self.replayed = self.fed


def policy_of(settings: Settings) -> SessionPolicy:
    """The session policy the settings describe."""
    return SessionPolicy(
        upstream_rate=settings.upstream_rate,
        idle_flush_s=settings.idle_flush_s,
        idle_timeout_s=settings.idle_timeout_s,
        max_uncovered_s=settings.max_uncovered_s,
        silence_flush_after_s=settings.silence_flush_after_s,
        silence_flush_ms=settings.silence_flush_ms,
        end_timeout_s=settings.end_timeout_s,
        g711_upstream=settings.g711_upstream,
        max_held_s=settings.max_held_s,
        retry=RetryPolicy(
            initial_s=settings.retry_initial_s,
            max_s=settings.retry_max_s,
            attempts=settings.retry_attempts,
            allowance=settings.reconnect_allowance,
            earn_s=settings.reconnect_earn_s,
            stall_timeout_s=settings.stall_timeout_s,
        ),
    )


def connector_of(settings: Settings) -> Connector:
    """Opens upstream connections as the settings say."""
    options = ConnectOptions(
        base_url=settings.api_url,
        api_key=settings.api_key.get_secret_value(),
        open_timeout_s=settings.connect_timeout_s,
        ping_interval_s=settings.ping_interval_s,
        ping_timeout_s=settings.ping_timeout_s,
    )

    async def connect(params: Any, session_id: str) -> Any:
        return await open_connection(options, params, session_id)

    return connect


class Registry:
    """All sessions of this worker. Call :meth:`handle` per record in partition
    order; run :meth:`tick` periodically and :attr:`checkpointer`'s ``run`` as
    a task; :meth:`assigning`/:meth:`assign`, :meth:`revoke` on rebalance;
    :meth:`drain` or :meth:`shutdown` on exit."""

    def __init__(
        self,
        settings: Settings,
        publisher: Publisher,
        ack: Callable[[Any], Awaitable[None]],
        telemetry: Telemetry,
        *,
        checkpoints: CheckpointStore | None = None,
        offsets: Offsets | None = None,
        connector: Connector | None = None,
    ) -> None:
        self._settings = settings
        self._policy = policy_of(settings)
        self._publisher = publisher
        self._ack = ack
        self._telemetry = telemetry
        self._offsets: Offsets = offsets or _NoOffsets()
        self._connector = connector or connector_of(settings)
        self.checkpointer = Checkpointer(
            checkpoints or MemoryCheckpoints(),
            publisher,
            telemetry,
            self._saved,
            upstream_rate=settings.upstream_rate,
            idle_timeout_s=settings.idle_timeout_s,
            interval_s=settings.checkpoint_interval_s,
        )
        self._pumps: dict[str, SessionPump] = {}
        self._parts: dict[int, _Partition] = {}
        self._loading: dict[int, asyncio.Event] = {}
        self._failed: dict[str, float] = {}  # session id -> last record (no restart storm)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._expiring: asyncio.Task[Any] | None = None
        self._runs = 0
        self._held: set[int] = set()  # revoked, not yet known whether they come back
        self._draining = False

    @property
    def active(self) -> int:
        return len(self._pumps)

    @property
    def loading(self) -> bool:
        """True while some assigned partition's checkpoints are being loaded."""
        return bool(self._loading)

    def session(self, session_id: str) -> Session | None:
        pump = self._pumps.get(session_id)
        return pump.session if pump is not None else None

    # ------------------------------------------------------------------ records

    async def handle(self, record: Record) -> None:
        """Process one input record (see :meth:`handle_run`); ``record.handle``
        is acked once it is done."""
        await self.handle_run([record], record.handle)

    async def handle_run(self, records: Sequence[Record], handle: object) -> None:
        """Process consecutive records of one partition; never raises.
        ``handle`` (the transport's event) is acked once every record is done.

        Each session touched gets one service after the run (one upstream
        frame per session per run). While draining, records are left
        unprocessed and unacked: the next owner reads them again.
        """
        if self._draining or not records:
            return
        partition = records[0].partition
        loading = self._loading.get(partition)
        if loading is not None:
            await loading.wait()
        part = self._partition(partition)
        touched: dict[str, SessionPump] = {}
        last = len(records) - 1
        slice_start = time.monotonic()
        for i, record in enumerate(records):
            now = time.monotonic()
            if now - slice_start > RUN_SLICE_S:  # a long run gives the loop a turn
                self._serve(touched)
                await asyncio.sleep(0)
                slice_start = now = time.monotonic()
            ack = handle if i == last else None
            if record.offset <= part.replayed:
                self._replayed(record, part, ack)
                continue
            stamp = None if record.timestamp_ms is None else record.timestamp_ms / 1000
            part.clock.record(record.offset, stamp, now)
            part.fed = record.offset
            try:
                self._route(record, part, stamp, ack, touched)
            except Exception as exc:  # a bug must cost one session, not the agent
                self._contain(record, part, exc, ack)
        self._serve(touched)
        self._runs += 1
        newest = records[-1].timestamp_ms
        if newest is not None and not self._runs % INPUT_DELAY_SAMPLING:
            self._telemetry.input_delay.record(max(0.0, time.time() - newest / 1000))
        await self._ack_ready(part)

    @staticmethod
    def _serve(touched: dict[str, SessionPump]) -> None:
        for pump in touched.values():
            pump.service()
        touched.clear()

    def _route(
        self,
        record: Record,
        part: _Partition,
        stamp: float | None,
        ack: object,
        touched: dict[str, SessionPump],
    ) -> None:
        pump: SessionPump | None = None
        try:
            session_id = _session_id(record.key)
            pump = self._pumps.get(session_id)
            self._check_size(record)
            headers = _parse(record.headers)
            pump = pump or self._start(session_id, headers, record)
        except (InputError, BadHeader) as exc:
            part.ledger.add(record.offset, None, ack)
            self._dead_letter(record, exc.code, exc.detail, pump)
            return
        if pump is None:  # done before a takeover (its session is closed)
            part.ledger.add(record.offset, None, ack)
            part.ledger.done(record.offset)
            self._telemetry.record_outcome("skipped")
            return
        part.ledger.add(record.offset, pump.session, ack)
        touched[session_id] = pump
        self._feed(pump, record, headers, stamp, part)

    def _feed(
        self,
        pump: SessionPump,
        record: Record,
        headers: RecordHeaders,
        stamp: float | None,
        part: _Partition,
    ) -> None:
        try:
            taken = pump.feed(record.offset, headers, record.value or b"", record, stamp)
        except InputError as exc:
            self._dead_letter(record, exc.code, exc.detail, None)
            return
        if not taken:
            part.ledger.done(record.offset)
            self._telemetry.record_outcome("skipped")
            return
        self._telemetry.record_outcome("processed")

    def _replayed(self, record: Record, part: _Partition, ack: object) -> None:
        """A record handled before a rebalance that gave its partition back,
        read again from the committed offset: not fed twice; done once its
        session's checkpoint passes it (at once if the session is over)."""
        try:
            pump = self._pumps.get(_session_id(record.key))
        except InputError:  # dead-lettered the first time round
            pump = None
        session = pump.session if pump is not None else None
        if session is not None and record.offset >= session.ack_before:
            part.ledger.add(record.offset, session, ack)
        else:
            part.ledger.add(record.offset, None, ack)
            part.ledger.done(record.offset)

    def _check_size(self, record: Record) -> None:
        size = len(record.value or b"")
        if size > self._settings.max_record_bytes:
            raise InputError("oversized", f"{size} bytes > {self._settings.max_record_bytes}")

    def _start(self, session_id: str, headers: RecordHeaders, record: Record) -> SessionPump | None:
        """The session of a record with no live session: resumed from its
        checkpoint, or new. None when the record was done before a takeover."""
        self._check_failed(session_id)
        saved = self.checkpointer.store.get(session_id)
        if saved is not None and saved.partition != record.partition:
            saved = None
        if saved is not None and saved.closed:
            if record.offset < saved.offset:
                return None
            if saved.state == "failed" and time.time() - saved.updated_at < self._idle_s:
                raise InputError("session_failed", "the session has failed")
            saved = None  # the id is used again for a new session
        session = Session(
            session_id,
            record.partition,
            self._policy,
            config=None if saved else headers.session_config(),
            resume=saved,
            now=time.monotonic(),
        )
        carrier = {k: v for k, v in (("traceparent", headers.traceparent),) if v}
        if headers.tracestate:
            carrier["tracestate"] = headers.tracestate
        span = self._telemetry.session_span(session_id, carrier)
        pump = SessionPump(
            session,
            connector=self._connector,
            publisher=self._publisher,
            owner=self,
            span=span,
            telemetry=self._telemetry,
        )
        self._pumps[session_id] = pump
        self._telemetry.session_started(session.config.endpoint, resumed=saved is not None)
        if saved is not None:
            log.info("session %s resumed at offset %d", session_id, record.offset)
        return pump

    @property
    def _idle_s(self) -> float:
        return self._settings.idle_timeout_s

    def _check_failed(self, session_id: str) -> None:
        if session_id in self._failed:
            self._failed[session_id] = time.monotonic()
            raise InputError("session_failed", "the session has failed")

    def _contain(self, record: Record, part: _Partition, exc: Exception, ack: object) -> None:
        log.error(
            "record %s[%d]@%d: unexpected %s",
            record.topic,
            record.partition,
            record.offset,
            type(exc).__name__,
            exc_info=exc,
        )
        pump = None
        if record.key:
            pump = self._pumps.get(record.key.decode("utf-8", "replace"))
        if pump is not None and not pump.session.finished:
            pump.fail("internal_error", f"{type(exc).__name__} while handling a record")
        if record.offset not in part.ledger:
            part.ledger.add(record.offset, None, ack)
        self._dead_letter(record, "internal_error", f"{type(exc).__name__}: {exc}"[:300], None)

    # ------------------------------------------------------------------ dead letters

    def _dead_letter(
        self, record: Record, code: str, detail: str, pump: SessionPump | None
    ) -> None:
        """Produce ``record`` to the DLQ in the background; the record is done
        (may be acked) only once the dead letter is durable."""
        part = self._parts.get(record.partition)
        if part is not None:
            part.ledger.hold(record.offset)
        self._telemetry.dead_lettered(code)
        log.warning(
            "dead-lettered %s[%d]@%d: %s", record.topic, record.partition, record.offset, code
        )
        if pump is not None and not pump.session.finished:
            pump.session.warning(code, detail, record.offset)
            pump.service()
        span = pump.span if pump is not None else None
        self._spawn(self._deliver_dead_letter(record, code, detail, span), "dead letter")

    async def _deliver_dead_letter(self, record: Record, code: str, detail: str, span: Any) -> None:
        try:
            await self._publisher.dead_letter(record, code, detail, span)
        except Exception as exc:  # nothing more can be done for it; do not stall the partition
            log.error("dead letter of %s@%d lost: %r", record.topic, record.offset, exc)
        part = self._parts.get(record.partition)
        if part is not None:
            part.ledger.done(record.offset)
            await self._ack_ready(part)

    # ------------------------------------------------------------------ pump owner

    def on_progress(self, pump: SessionPump) -> None:
        self.checkpointer.due(pump.session)

    def on_rejected(self, pump: SessionPump, rejected: list[Rejected]) -> None:
        for item in rejected:
            if isinstance(item.record, Record):
                self._dead_letter(item.record, item.code, item.detail, pump)

    def on_finished(self, pump: SessionPump) -> None:
        self._spawn(self._finish(pump), "finish")

    def on_latency(self, seconds: float) -> None:
        self._telemetry.upstream_latency.record(seconds)

    async def _finish(self, pump: SessionPump) -> None:
        """The session is over and its events are published: closing entry,
        release its records, forget it."""
        session = pump.session
        log.info(
            "session %s %s: %.1f s of audio, %d finals, at most %.2f s held uncovered",
            session.session_id,
            session.state,
            session.audio_seconds,
            session.totals()[0],
            session.max_held_seconds,
        )
        await self.checkpointer.close(session)
        await pump.stop()
        if pump.span is not None:
            pump.span.end()
        if self._pumps.get(session.session_id) is pump:  # not revoked meanwhile
            del self._pumps[session.session_id]
            self._telemetry.session_finished(session)
        if session.state == "failed":
            self._failed[session.session_id] = time.monotonic()

    async def _saved(self, session: Session, before: int | None) -> None:
        """The checkpointer made ``session``'s records below ``before`` (all
        when None) safe to ack."""
        part = self._parts.get(session.partition)
        if part is None:
            return
        part.ledger.release(session, before)
        await self._ack_ready(part)

    async def _ack_ready(self, part: _Partition) -> None:
        if part.held:
            return  # revoked: these events belong to a generation Faust has forgotten
        for handle in part.ledger.ready():
            if handle is not None:  # a run's records share their last one's event
                await self._ack(handle)

    # ------------------------------------------------------------------ housekeeping

    async def tick(self) -> None:
        """Periodic: flush quiet sessions, bound uncovered audio, end idle ones,
        expire closing entries and orphans, ack what is done."""
        now = time.monotonic()
        for session_id, seen in list(self._failed.items()):
            if now - seen >= self._idle_s:
                del self._failed[session_id]
        for partition, part in self._parts.items():
            part.clock.position(self._offsets.highwater(partition), now)
        for pump in list(self._pumps.values()):
            session = pump.session
            owner = self._parts.get(session.partition)
            if owner is not None and not session.finished:
                pump.tick(owner.clock.quiet_s(session.last_input, session.last_stamp, now))
        self._telemetry.observe_sessions(p.session for p in self._pumps.values())
        self._count_audio()
        if self._expiring is None or self._expiring.done():  # never two at once
            self._expiring = self._spawn(
                self.checkpointer.expire(
                    self._offsets.committed, self._orphan_quiet, self._is_live
                ),
                "expire checkpoints",
            )
        for part in self._parts.values():
            await self._ack_ready(part)

    def _count_audio(self) -> None:
        """Audio received since the last tick (counted here, not per record)."""
        total = 0.0
        for pump in self._pumps.values():
            seconds = pump.session.audio_seconds
            total += max(0.0, seconds - pump.audio_counted)
            pump.audio_counted = seconds
        self._telemetry.count("audio_in", total)

    def _orphan_quiet(self, saved: Checkpoint) -> float | None:
        part = self._parts.get(saved.partition)
        if part is None or part.held or saved.partition in self._loading:
            return None
        now = time.monotonic()
        return part.clock.quiet_s(part.assigned_at, saved.updated_at, now)

    def _is_live(self, session_id: str) -> bool:
        return session_id in self._pumps

    # ------------------------------------------------------------------ partitions

    def _partition(self, partition: int) -> _Partition:
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Partition()
        return part

    def assigning(self, partitions: set[int]) -> None:
        """Partitions were assigned; hold their records until :meth:`assign`
        (their checkpoints are being loaded)."""
        for partition in partitions:
            self._loading.setdefault(partition, asyncio.Event())

    def assign(self, partitions: set[int]) -> None:
        """The checkpoints of ``partitions`` are loaded: process their records."""
        for partition in partitions:
            self._partition(partition).assigned_at = time.monotonic()
            gate = self._loading.pop(partition, None)
            if gate is not None:
                gate.set()

    async def revoke(self, partitions: set[int], timeout_s: float) -> None:
        """Partitions were revoked: a rebalance began (Kafka's eager protocol
        revokes everything, even what comes straight back). Their sessions are
        *held*: each one's checkpoint is written now, within ``timeout_s``,
        before another worker could read the partition, and the rebalance
        goes on at once (no drain, no close). :meth:`reassigned` then keeps
        the sessions whose partition came back, upstream connections and all,
        and closes the others, whose new owner resumes from these checkpoints.
        Nothing is acked meanwhile (Faust has forgotten these acks)."""
        for partition in partitions:
            part = self._parts.get(partition)
            if part is not None:
                part.held = True
        self._held |= partitions
        pumps = [p for p in self._pumps.values() if p.session.partition in partitions]
        try:
            async with asyncio.timeout(timeout_s):
                await self.checkpointer.save_all(p.session for p in pumps)
        except TimeoutError:
            log.warning("revoked %s: checkpoints not all written in time", sorted(partitions))
        self.checkpointer.hold(partitions)
        log.info("revoked %s: %d sessions held", sorted(partitions), len(pumps))

    async def reassigned(self, assigned: set[int]) -> tuple[set[int], set[int]]:
        """The new assignment is known: returns ``(kept, moved)`` of the held
        partitions. Sessions of kept partitions carry on (their records, read
        again from the committed offset, are not fed twice); sessions of
        moved partitions are closed. Call before loading the checkpoints of
        the partitions that are new here."""
        kept, moved = self._held & assigned, self._held - assigned
        self._held = set()
        pumps = [p for p in self._pumps.values() if p.session.partition in moved]
        for pump in pumps:
            await self._close(pump)
        for partition in moved:
            self._parts.pop(partition, None)
        self.checkpointer.forget(moved)
        for partition in kept:
            self._partition(partition).rejoin()
        await self.checkpointer.release(kept)
        log.info(
            "assignment: kept %s, moved away %s (%d sessions closed)",
            sorted(kept),
            sorted(moved),
            len(pumps),
        )
        return kept, moved

    async def _quiesce(self, pumps: list[SessionPump], timeout_s: float) -> int:
        """Flush every session's silent streams, wait up to ``timeout_s`` for
        the flushes to be confirmed and published, then checkpoint them.
        Returns how many settled in time."""
        live = [p for p in pumps if not p.session.finished]
        for pump in live:
            pump.session.drain()
            pump.service()
        results = await asyncio.gather(
            *(p.wait_for(_quiet(p), timeout_s) for p in live), return_exceptions=True
        )
        await self.checkpointer.save_all(p.session for p in live)
        return sum(1 for r in results if r is True)

    async def _close(self, pump: SessionPump) -> None:
        await pump.stop()
        if pump.span is not None:
            pump.span.end()
        if self._pumps.get(pump.session.session_id) is pump:
            del self._pumps[pump.session.session_id]
            self._telemetry.session_finished(pump.session)

    async def drain(self, timeout_s: float) -> bool:
        """Graceful stop (SIGTERM): take no new audio, flush every session, wait
        up to ``timeout_s`` for the finals, checkpoint, ack what is covered,
        close. Returns True when every live session settled in time. The
        caller commits afterwards (Faust commits acked offsets on stop)."""
        self._draining = True
        pumps = list(self._pumps.values())
        settled = await self._quiesce(pumps, timeout_s)
        for part in self._parts.values():
            await self._ack_ready(part)
        await self.shutdown()
        live = sum(1 for p in pumps if not p.session.finished)
        log.info("drained %d sessions (%d settled)", len(pumps), settled)
        return settled >= live

    async def shutdown(self) -> None:
        """Stop every session and background task (a drain first is the caller's choice)."""
        for pump in list(self._pumps.values()):
            await self._close(pump)
        for task in list(self._tasks):
            task.cancel()

    # ------------------------------------------------------------------ tasks

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())


def _quiet(pump: SessionPump) -> Callable[[], bool]:
    return lambda: pump.session.quiesced and pump.outputs_idle


_NO_HEADERS = RecordHeaders()
_PARSED: dict[tuple[tuple[str, bytes], ...], RecordHeaders] = {}


def _parse(raw: Sequence[tuple[str, bytes]]) -> RecordHeaders:
    """A record's headers, parsed once per distinct set (most audio records
    carry none; a session's first carries the same few as its peers)."""
    if not raw:
        return _NO_HEADERS
    key = tuple(raw)
    parsed = _PARSED.get(key)
    if parsed is None:
        parsed = parse_headers(decode_headers(raw))  # BadHeader: not cached
        if len(_PARSED) >= 4096:
            _PARSED.clear()
        _PARSED[key] = parsed
    return parsed


def _session_id(key: bytes | None) -> str:
    if not key:
        raise InputError("missing_key", "the record has no key (session id)")
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("bad_key", "the record key is not UTF-8") from None
