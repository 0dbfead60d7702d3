"""Stand-ins for the worker's outside world, for unit tests (no sockets, no Kafka).

- :class:`FakeUpstream`: a recognizer: one final per run of equal non-zero
  samples (a zero sample or a flush ends it), times relative to its connection.
- :class:`FakeServer`: opens :class:`FakeConnection`\\ s (the
  ``UpstreamConnection`` interface) and can misbehave on demand.
- :class:`FakeProducer`: the publisher's producer; records what was produced.
- :class:`Owner`: a ``PumpOwner`` that records what a pump reports.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.wire import FlushConfirmation, FlushRequest, ServerMessage, StreamParams, Transcript
from workers.errors import UpstreamClosed, UpstreamError, UpstreamProtocolError

FRAMES_PER_MS = 8  # the tests' raw audio is 8 kHz


@dataclass
class FakeUpstream:
    """One connection of a recognizer stand-in."""

    frames_per_ms: int = FRAMES_PER_MS
    frames: int = 0
    run_start: int | None = None
    run_value: int = 0
    outbox: list[ServerMessage] = field(default_factory=list)

    def receive(self, items: list[bytes | FlushRequest]) -> None:
        for item in items:
            if isinstance(item, FlushRequest):
                self._end_run(self.frames)
                self.outbox.append(FlushConfirmation(id=item.id))
            else:
                self._audio(np.frombuffer(item, dtype="<i2"))

    def _audio(self, samples: np.ndarray) -> None:
        for value in samples.tolist():
            if self.run_start is not None and value != self.run_value:
                self._end_run(self.frames)
            if value and self.run_start is None:
                self.run_start, self.run_value = self.frames, value
            self.frames += 1

    def _end_run(self, end: int) -> None:
        if self.run_start is None:
            return
        start = self.run_start
        self.run_start = None
        if end > start:
            self.outbox.append(
                Transcript(
                    text=f"w{self.run_value}",
                    start_ms=start // self.frames_per_ms,
                    duration_ms=(end - start) // self.frames_per_ms,
                )
            )


_CLOSED = object()


class FakeConnection:
    """``UpstreamConnection`` on a :class:`FakeUpstream`; ``mode`` misbehaves:
    ``normal``, ``drop`` (lost at once), ``malformed`` (a bad frame at once),
    ``silent`` (takes everything, answers nothing)."""

    def __init__(self, mode: str, frames_per_ms: int) -> None:
        self.mode = mode
        self.upstream = FakeUpstream(frames_per_ms)
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.sent: list[bytes | FlushRequest] = []
        if mode == "drop":
            self.inbox.put_nowait(UpstreamClosed("dropped at once"))
        elif mode == "malformed":
            self.inbox.put_nowait(UpstreamProtocolError("malformed upstream frame: not JSON"))

    writable = True
    on_writable: Any = None

    def send_audio(self, chunk: bytes) -> None:
        self._take(chunk)

    def send_flush(self, request: FlushRequest) -> None:
        self._take(request)

    def _take(self, item: bytes | FlushRequest) -> None:
        self.sent.append(item)
        if self.mode == "silent":
            return
        self.upstream.receive([item])
        for message in self.upstream.outbox:
            self.inbox.put_nowait(message)
        self.upstream.outbox.clear()

    async def messages(self) -> Any:
        while True:
            item = await self.inbox.get()
            if item is _CLOSED:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    async def close(self) -> None:
        self.inbox.put_nowait(_CLOSED)

    def abort(self) -> None:
        self.inbox.put_nowait(UpstreamClosed("aborted"))


@dataclass
class FakeServer:
    """Opens connections (a ``Connector``); ``modes`` are used in turn, the
    last one for every later connection; ``refuse`` refuses with that error."""

    modes: list[str] = field(default_factory=lambda: ["normal"])
    refuse: UpstreamError | None = None
    frames_per_ms: int = FRAMES_PER_MS
    opened: list[FakeConnection] = field(default_factory=list)
    attempts: int = 0

    async def __call__(self, params: StreamParams, session_id: str) -> FakeConnection:
        self.attempts += 1
        if self.refuse is not None:
            raise self.refuse
        mode = self.modes[min(len(self.opened), len(self.modes) - 1)]
        conn = FakeConnection(mode, self.frames_per_ms)
        self.opened.append(conn)
        return conn


@dataclass
class Produced:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    partition: int | None


@dataclass
class FakeProducer:
    """Records what is produced; ``fail`` raises for records of that topic."""

    records: list[Produced] = field(default_factory=list)
    fail: dict[str, BaseException] = field(default_factory=dict)

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        partition: int | None = None,
    ) -> asyncio.Future[None]:
        if topic in self.fail:
            raise self.fail[topic]
        self.records.append(Produced(topic, key, value, dict(headers), partition))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def on(self, topic: str) -> list[Produced]:
        return [r for r in self.records if r.topic == topic]


@dataclass
class Owner:
    """A ``PumpOwner`` that keeps what it was told."""

    progress: int = 0
    rejected: list[Any] = field(default_factory=list)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    latencies: list[float] = field(default_factory=list)

    def on_progress(self, pump: Any) -> None:
        self.progress += 1

    def on_rejected(self, pump: Any, rejected: list[Any]) -> None:
        self.rejected.extend(rejected)

    def on_finished(self, pump: Any) -> None:
        self.finished.set()

    def on_latency(self, seconds: float) -> None:
        self.latencies.append(seconds)
