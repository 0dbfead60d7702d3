"""Timestamps on both sides of the system under test, taken in the bench process.

:class:`Recorder` is the emulator's observer: per session (the connection's
``custom_model_id``) it keeps the cumulative audio bytes received and when,
and when each final transcript left. :class:`OutputReader` reads the output
topic and notes when each final became readable, keyed the same way
(session, ``start_ms``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.stats import FloatArray
from emulator.server import SessionStats

FinalKey = tuple[str, int]  # (session id, start_ms)


@dataclass
class _Arrivals:
    total: int = 0
    sizes: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)


class Recorder:
    """Emulator observer (see :class:`emulator.server.EmulatorObserver`)."""

    def __init__(self) -> None:
        self._arrivals: dict[str, _Arrivals] = {}
        self.finals_sent: dict[FinalKey, float] = {}
        self.connections: dict[str, SessionStats] = {}

    def audio_received(self, stats: SessionStats, nbytes: int) -> None:
        sid = stats.params.custom_model_id or ""
        arrivals = self._arrivals.get(sid)
        if arrivals is None:
            arrivals = self._arrivals[sid] = _Arrivals()
            self.connections[sid] = stats
        arrivals.total += nbytes
        arrivals.sizes.append(arrivals.total)
        arrivals.times.append(time.time())

    def frame_sent(self, stats: SessionStats, frame: str) -> None:
        if not frame.startswith('{"type":"transcript"'):
            return
        start = json.loads(frame).get("start_ms")
        if start is not None:
            self.finals_sent[(stats.params.custom_model_id or "", int(start))] = time.time()

    def arrivals(self, sid: str) -> tuple[FloatArray, FloatArray]:
        """(cumulative bytes, wall times) of ``sid``'s audio frames so far."""
        got = self._arrivals.get(sid)
        if got is None:
            return np.empty(0), np.empty(0)
        return np.asarray(got.sizes, dtype=np.float64), np.asarray(got.times, dtype=np.float64)

    def ended(self, sids: list[str]) -> bool:
        """True when every one of ``sids`` connected and its connection closed."""
        return all(sid in self.connections and self.connections[sid].ended for sid in sids)

    def forget(self, sids: list[str]) -> None:
        """Drop a finished step's data (keeps memory flat across steps)."""
        for sid in sids:
            self._arrivals.pop(sid, None)
            self.connections.pop(sid, None)
        wanted = set(sids)
        self.finals_sent = {k: v for k, v in self.finals_sent.items() if k[0] not in wanted}


class OutputReader:
    """Reads ``topic`` (all partitions, from the start, no group) in the background."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=5,
        )
        self._tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.readable: dict[FinalKey, float] = {}
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.assign(self._tps)
        await self._consumer.seek_to_beginning(*self._tps)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            now = time.time()
            for records in batches.values():
                for record in records:
                    self._note(record.key, record.value, now)
            if batches:
                self.changed.set()

    def _note(self, key: bytes | None, value: bytes | None, at: float) -> None:
        if not key or not value:
            return
        event = json.loads(value)
        start = event.get("start_ms")
        if event.get("type") == "transcript" and event.get("is_final", True) and start is not None:
            self.readable.setdefault((key.decode(), int(start)), at)

    async def wait_for(self, keys: list[FinalKey], timeout_s: float) -> bool:
        """Wait until every one of ``keys`` is readable; False after ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while not all(k in self.readable for k in keys):
                    self.changed.clear()
                    await self.changed.wait()
                return True
        return False
