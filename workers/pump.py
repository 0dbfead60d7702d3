"""The asyncio pump around a :class:`~workers.session.Session`.

:class:`SessionRunner` holds one upstream connection per stream, sends what the
stream says to send, feeds upstream messages back and hands the resulting
events to an :class:`Emitter`. This is the one loop that owns reconnect
backoff (STYLE.md, "Retry policy is data"): drops, ping timeouts, 429 and 5xx
are retried with :class:`~workers.upstream.RetryPolicy`; 400/401/402 fail the
session with a ``session_failed`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from schemas.events import SessionEvent, TranscriptEvent, event_id
from schemas.wire import FlushRequest
from workers.errors import InputError, UpstreamError
from workers.session import Session
from workers.stream import ChannelStream, Event
from workers.upstream import ConnectOptions, RetryPolicy, UpstreamConnection, open_connection

log = logging.getLogger(__name__)


class Emitter(Protocol):
    """Where events go (Kafka topics in the worker, a list in tests)."""

    async def emit(self, event: Event, runner: SessionRunner) -> None:
        """Publish ``event`` durably; return once it is acknowledged."""


class SessionRunner:
    """Runs one session's upstream streams until :meth:`end` or :meth:`stop`.

    Call :meth:`wake` after feeding audio or queueing flushes; await
    :meth:`end` for an ``end`` record (flush, wait for finals, close, emit
    ``session_ended``).
    """

    def __init__(
        self,
        session: Session,
        *,
        connect: ConnectOptions,
        policy: RetryPolicy,
        emitter: Emitter,
        on_progress: Callable[[], None] = lambda: None,
        on_latency: Callable[[float], None] = lambda ms: None,
    ) -> None:
        self.session = session
        self._connect = connect
        self._policy = policy
        self._emitter = emitter
        self._on_progress = on_progress
        self._on_latency = on_latency
        self._sent_at: dict[int, deque[tuple[int, float]]] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._wake: dict[int, asyncio.Event] = {}
        self._progress = asyncio.Condition()
        self._closing = False
        self.failed: UpstreamError | None = None
        self.finished = False
        self.ack_before = -1  # input records below this offset may be acked (owner updates)
        self.last_input = time.monotonic()
        self.last_message = time.monotonic()  # last upstream message, any stream
        self.context: object = None  # tracing context, set by the owner

    # ------------------------------------------------------------------ control

    def wake(self) -> None:
        """Start streams that became ready and nudge their senders."""
        if self.failed is not None or self._closing:
            return
        for index, stream in enumerate(self.session.streams):
            if index not in self._tasks:
                self._wake[index] = asyncio.Event()
                self._tasks[index] = asyncio.create_task(
                    self._run_stream(index, stream), name=f"upstream:{self.session.session_id}"
                )
            self._wake[index].set()

    async def end(self, timeout_s: float) -> bool:
        """Flush, wait up to ``timeout_s`` for every flush to be confirmed, close.

        Returns True when every stream confirmed (nothing left uncovered).
        """
        try:
            self.session.finish_input()
        except InputError as exc:  # a truncated container: keep what was decoded
            log.warning("session %s: %s", self.session.session_id, exc)
        self.session.flush(user=True)
        self.wake()
        settled = await self.wait_quietly(self._all_flushed, timeout_s)
        await self.stop()
        return settled

    async def wait_quietly(self, predicate: Callable[[], bool], quiet_s: float) -> bool:
        """Wait until ``predicate()`` holds, giving up only after ``quiet_s`` without
        any upstream message: a slow but working upstream is waited for (its
        finals must not be lost), a silent or dead one is not."""
        while not await self.wait_for(predicate, quiet_s):
            if self._dead() or time.monotonic() - self.last_message >= quiet_s:
                return False
        return True

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``predicate()`` holds (re-checked on every upstream message)."""
        async with self._progress:
            try:
                await asyncio.wait_for(
                    self._progress.wait_for(lambda: predicate() or self._dead()), timeout_s
                )
            except TimeoutError:
                return False
        return predicate()

    def _dead(self) -> bool:
        return self.failed is not None or (
            bool(self._tasks) and all(t.done() for t in self._tasks.values())
        )

    def _all_flushed(self) -> bool:
        return all(s.pending_flushes == 0 for s in self.session.streams)

    async def stop(self) -> None:
        """Close every connection and task; the runner is finished afterwards."""
        self._closing = True
        for event in self._wake.values():
            event.set()
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.session.close()
        self.finished = True

    # ------------------------------------------------------------------ per stream

    async def _run_stream(self, index: int, stream: ChannelStream) -> None:
        attempt = 0
        reason: str | None = None
        while not self._closing:
            try:
                conn = await open_connection(self._connect, stream.params, self.session.session_id)
            except UpstreamError as exc:
                attempt += 1
                if not await self._backoff(exc, attempt):
                    return
                reason = _reason(exc)
                continue
            try:
                await self._emit(stream.connected(reason))
                await self._serve(index, stream, conn)
                return
            except UpstreamError as exc:
                stream.disconnected()
                attempt = 1 if stream.covered > 0 else attempt + 1
                if not await self._backoff(exc, attempt):
                    return
                reason = _reason(exc)
            finally:
                conn.abort()

    async def _backoff(self, exc: UpstreamError, attempt: int) -> bool:
        """Wait before the next attempt; False (and the session failed) if none."""
        if not exc.retriable or self._policy.exhausted(attempt):
            await self._fail(exc)
            return False
        delay = self._policy.delay(attempt)
        log.info("session %s: %s; retry %d in %.2fs", self.session.session_id, exc, attempt, delay)
        await asyncio.sleep(delay)
        return True

    async def _serve(self, index: int, stream: ChannelStream, conn: UpstreamConnection) -> None:
        sender = asyncio.create_task(self._send_loop(index, stream, conn))
        self._sent_at[index] = deque()
        try:
            async for message in conn.messages():
                self.last_message = time.monotonic()
                for event in stream.on_message(message):
                    self._measure(index, stream, event)
                    await self._emit(event)
                stream.events_emitted()
                await self._notify()
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        if sender.done() and not sender.cancelled() and sender.exception() is not None:
            raise sender.exception()  # type: ignore[misc]

    async def _send_loop(self, index: int, stream: ChannelStream, conn: UpstreamConnection) -> None:
        wake = self._wake[index]
        sent_at = self._sent_at[index]
        while True:
            wake.clear()
            for item in stream.outgoing():
                if isinstance(item, FlushRequest):
                    await conn.send_flush(item)
                else:
                    await conn.send_audio(item)
                    sent_at.append((stream.sent_frames, time.monotonic()))
            await wake.wait()

    def _measure(self, index: int, stream: ChannelStream, event: Event) -> None:
        """Upstream latency: when the last audio of a final was sent -> its arrival."""
        if not isinstance(event, TranscriptEvent) or not event.is_final:
            return
        end = stream.to_frame((event.start_ms or 0) + (event.duration_ms or 0))
        sent_at = self._sent_at[index]
        while sent_at and sent_at[0][0] < end:
            sent_at.popleft()
        if sent_at:
            self._on_latency((time.monotonic() - sent_at[0][1]) * 1000)

    async def _notify(self) -> None:
        async with self._progress:
            self._progress.notify_all()
        self._on_progress()

    async def _emit(self, event: Event) -> None:
        await self._emitter.emit(event, self)

    async def _fail(self, exc: UpstreamError) -> None:
        if self.failed is not None:
            return
        self.failed = exc
        code = exc.code or (str(exc.status) if exc.status else "upstream_unavailable")
        await self._emit(
            SessionEvent(
                event_id=event_id(self.session.session_id, None, 0, "session_failed"),
                session_id=self.session.session_id,
                type="session_failed",
                code=code,
                detail=str(exc),
            )
        )
        await self._notify()


def _reason(exc: UpstreamError) -> str:
    if exc.status is not None:
        return f"http_{exc.status}"
    if exc.close_code is not None:
        return f"closed_{exc.close_code}"
    return "connection_lost"
