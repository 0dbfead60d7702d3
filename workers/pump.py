"""The asyncio pump around one :class:`~workers.session.Session`.

:class:`SessionPump` feeds the session what happens (records, upstream
messages, connections opened and lost, the decoder being ready, the time) and
after every input *services* what the session asks for: it starts one task
per upstream link, sends what each link owes (one frame per session per run
of records: sends are plain writes), closes the links the session gives
up (a stalled one is replaced and its audio replayed), publishes the
session's outputs in order, and reports dead letters, checkpoint-worthy
progress and the end to its owner (:class:`PumpOwner`).

The link task is the one loop that sleeps between reconnects (STYLE.md,
"Retry policy is data"): how long is the session's answer
(:meth:`~workers.session.Session.connect_delay`). Every task is supervised:
an unexpected exception fails the session (``session_failed`` with code
``internal_error``) and is logged; it never escapes into the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from opentelemetry.trace import Span, Status, StatusCode

from schemas.envelope import RecordHeaders
from schemas.wire import FlushRequest, StreamParams
from workers.errors import PublishError, UpstreamError, UpstreamStalled
from workers.publisher import Publisher
from workers.session import LinkKey, Output, Session
from workers.source import Rejected
from workers.telemetry import Telemetry
from workers.upstream import UpstreamConnection

log = logging.getLogger(__name__)

Connector = Callable[[StreamParams, str], Awaitable[UpstreamConnection]]


class PumpOwner(Protocol):
    """What a pump reports to the registry."""

    def on_progress(self, pump: SessionPump) -> None:
        """Durable coverage moved: a checkpoint is due."""

    def on_rejected(self, pump: SessionPump, rejected: list[Rejected]) -> None:
        """These records must be dead-lettered."""

    def on_finished(self, pump: SessionPump) -> None:
        """The session ended or failed and every output is published."""

    def on_latency(self, seconds: float) -> None:
        """An upstream latency measurement."""


class SessionPump:
    """Runs one session's links and outputs. Feed it with :meth:`feed` and
    :meth:`tick`; :meth:`stop` it when it is over or revoked."""

    def __init__(
        self,
        session: Session,
        *,
        connector: Connector,
        publisher: Publisher,
        owner: PumpOwner,
        span: Span | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.session = session
        self.span = span
        self._telemetry = telemetry
        self._connections = 0
        self._connector = connector
        self._publisher = publisher
        self._owner = owner
        self._loop = asyncio.get_running_loop()
        self._links: dict[LinkKey, asyncio.Task[None]] = {}
        self._conns: dict[LinkKey, UpstreamConnection] = {}
        self._stalled: set[LinkKey] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._outputs = asyncio.Event()
        self._progress = asyncio.Event()  # set on every service(): wait_for re-checks
        self._emitter = self._spawn(self._emit_loop(), "emit")
        self._input_armed = False
        self._publishing = False
        self._stopped = False
        self.finished = False  # the owner was told (on_finished)
        self.audio_counted = 0.0  # audio seconds the owner has counted (metrics)

    # ------------------------------------------------------------------ inputs

    def feed(
        self, offset: int, headers: RecordHeaders, audio: bytes, record: object, stamp: float | None
    ) -> bool:
        """One record (see :meth:`Session.on_record`); raises ``InputError``
        for a record to dead-letter. Call :meth:`service` after the records
        at hand (once per run: one upstream frame for all of them)."""
        try:
            return self.session.on_record(
                offset, headers, audio, record=record, now=time.monotonic(), stamp=stamp
            )
        finally:
            self._report_rejected()  # in record order, before any later record's

    def _report_rejected(self) -> None:
        rejected = self.session.take_rejected()
        if rejected:
            self._owner.on_rejected(self, rejected)

    def tick(self, quiet_s: float) -> None:
        self.session.tick(time.monotonic(), quiet_s)
        self.service()

    def fail(self, code: str, detail: str) -> None:
        """Fail the session from outside (a bug contained by the owner)."""
        self.session.fail(code, detail)
        self.service()

    # ------------------------------------------------------------------ service

    def service(self) -> None:
        """Act on what the session asks for after an input; call after each one."""
        if self._stopped:
            return
        session = self.session
        self._report_rejected()
        for seconds in session.take_latencies():
            self._owner.on_latency(seconds)
        for key, reason in session.take_closes():
            self._close_link(key, reason)
        self._service_links()
        if session.has_outputs:
            self._outputs.set()
        self._progress.set()
        self._service_input()

    def _service_input(self) -> None:
        """Input waiting on coverage is retried after each input; input waiting
        on the decoder is retried when the decoder says so (``arm``)."""
        session = self.session
        if session.input_held:
            session.process_input(time.monotonic())
            self._sync_after_input()
        if session.input_busy and not session.input_held and not self._input_armed:
            self._input_armed = True
            session.arm_input(self._input_ready_threadsafe)

    def _sync_after_input(self) -> None:
        """Decoding may have opened streams or failed: act on it."""
        session = self.session
        self._report_rejected()
        self._service_links()
        if session.has_outputs:
            self._outputs.set()

    def _service_links(self) -> None:
        """Start new links, send what the open ones owe; after the end, stop links that
        are not connected (backing off: nothing is left to send)."""
        if len(self._links) < self.session.links_created:  # else every link was started
            for key in self.session.link_keys():
                if key not in self._links:
                    self._links[key] = self._spawn(self._run_link(key), f"link {key}")
        for key in list(self._conns):
            self._send(key)
        if self.session.finished:
            for key, task in self._links.items():
                if key not in self._conns:
                    task.cancel()

    def _input_ready_threadsafe(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to do
            self._loop.call_soon_threadsafe(self._input_ready)

    def _input_ready(self) -> None:
        self._input_armed = False
        if not self._stopped:
            self.session.process_input(time.monotonic())
            self.service()

    # ------------------------------------------------------------------ links

    async def _run_link(self, key: LinkKey) -> None:
        session = self.session
        while True:
            delay = session.connect_delay(key, time.monotonic())
            if delay is None:
                return
            if delay > 0:
                await asyncio.sleep(delay)
                continue  # the session may have changed its mind meanwhile
            try:
                conn = await self._connector(session.params(key), session.session_id)
            except UpstreamError as exc:
                session.on_connect_failed(key, exc, time.monotonic())
                self.service()
                continue
            if session.connect_delay(key, time.monotonic()) is None:
                conn.abort()  # the link ended while we connected
                return
            await self._serve(key, conn)

    async def _serve(self, key: LinkKey, conn: UpstreamConnection) -> None:
        session = self.session
        self._conns[key] = conn
        conn.on_writable = lambda: self._send(key)
        span = self._connection_span(key)
        try:
            session.on_connected(key, time.monotonic())
            self.service()
            async for message in conn.messages():
                session.on_message(key, message, time.monotonic())
                self.service()
        except UpstreamError as exc:
            error = self._stall_error(key) or exc
            session.on_closed(key, error, time.monotonic())
            if span is not None:  # the error's class and close code only: no upstream text
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                if error.close_code is not None:
                    span.set_attribute("stt.close_code", error.close_code)
        finally:
            conn.abort()
            self._conns.pop(key, None)
            if span is not None:
                span.end()
        self.service()

    def _connection_span(self, key: LinkKey) -> Span | None:
        """The span of one upstream connection, child of the session's."""
        self._connections += 1
        if self._telemetry is None:
            return None
        epoch, stream = key
        return self._telemetry.child_span(
            "stt.upstream",
            self.span,
            {
                "stt.session_id": self.session.session_id,
                "stt.endpoint": self.session.config.endpoint,
                "stt.epoch": epoch,
                "stt.stream": stream,
                "stt.connection": self._connections,
            },
        )

    def _stall_error(self, key: LinkKey) -> UpstreamError | None:
        if key not in self._stalled:
            return None
        self._stalled.discard(key)
        return UpstreamStalled(
            "upstream owed an answer and sent nothing", session_id=self.session.session_id
        )

    def _send(self, key: LinkKey) -> None:
        """Write what ``key``'s connection owes; while its socket buffer is full,
        the audio stays in the stream until the connection is writable again."""
        conn = self._conns.get(key)
        if conn is None or not conn.writable or self._stopped:
            return
        try:
            for item in self.session.outgoing(key, time.monotonic()):
                if isinstance(item, FlushRequest):
                    conn.send_flush(item)
                else:
                    conn.send_audio(item)
        except UpstreamError:
            conn.abort()  # the receiver sees the loss and reports it

    def _close_link(self, key: LinkKey, reason: str) -> None:
        conn = self._conns.get(key)
        if conn is None:
            return
        if reason == "stall":
            self._stalled.add(key)
            conn.abort()
        else:
            self._spawn(_close_quietly(conn), f"close {key}")

    # ------------------------------------------------------------------ outputs

    async def _emit_loop(self) -> None:
        session = self.session
        while True:
            await self._outputs.wait()
            self._outputs.clear()
            self._publishing = True
            await self._publish_all(session.take_outputs())
            self._publishing = False
            self.service()  # publishing may have failed the session
            if session.dirty:
                self._owner.on_progress(self)
            done = session.finished and not session.has_outputs  # its last event is out
            if done and not self._links_running() and not self.finished:
                self.finished = True
                self._owner.on_finished(self)

    async def _publish_all(self, outputs: list[Output]) -> None:
        """Enqueue every output in order, then wait for each: one producer
        request carries them (linger), and coverage becomes durable in order."""
        pending = []
        for output in outputs:
            done = None if output.event is None else await self._submit(output.event)
            pending.append((output, done))
        failed = False
        for output, done in pending:
            if done is not None and not await self._acknowledged(done):
                failed = True  # the session failed: what follows is not durable
            if not failed:
                self.session.on_published(output)

    async def _submit(self, event: Any) -> Awaitable[None]:
        try:
            return await self._publisher.submit(event, self.span)
        except Exception as exc:  # a bug: contained to this session
            return _raise(exc)

    async def _acknowledged(self, done: Awaitable[None]) -> bool:
        try:
            await done
            return True
        except PublishError as exc:
            # The broker will never take it (e.g. too large): the session fails
            # rather than go on with a gap in its output.
            log.error("session %s: %s", self.session.session_id, exc)
            self.session.fail("output_rejected", str(exc))
        except Exception as exc:  # a bug: contained to this session
            log.error("session %s: publishing failed", self.session.session_id, exc_info=exc)
            self.session.fail("internal_error", f"{type(exc).__name__} while publishing")
        return False

    @property
    def outputs_idle(self) -> bool:
        """Every output so far is published (and acknowledged)."""
        return not self._publishing and not self.session.has_outputs

    def _links_running(self) -> bool:
        return any(not t.done() for t in self._links.values())

    # ------------------------------------------------------------------ tasks

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = self._loop.create_task(coro, name=f"{self.session.session_id} {name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            if not self._stopped and self.session.finished:
                self._outputs.set()  # a link ended: the end may be reportable now
            return
        error = task.exception()
        log.error(
            "session %s: task %s failed",
            self.session.session_id,
            task.get_name(),
            exc_info=error,
        )
        if not self._stopped and not self.session.finished:
            self.fail("internal_error", f"{type(error).__name__} in {task.get_name()}")

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``predicate()`` holds (re-checked after every input) or
        ``timeout_s`` passed; returns ``predicate()``."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)
        return True

    async def stop(self) -> None:
        """Cancel every task and drop every connection; the session is closed."""
        self._stopped = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for conn in list(self._conns.values()):
            conn.abort()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.session.close()


async def _raise(exc: BaseException) -> None:
    raise exc


async def _close_quietly(conn: UpstreamConnection) -> None:
    with contextlib.suppress(UpstreamError):
        await conn.close()
