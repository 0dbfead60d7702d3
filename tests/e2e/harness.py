"""Whole-process test harness: topics, the emulator, worker processes, I/O.

A test builds a :class:`Stack` (unique topic prefix and consumer group), starts
one or more :class:`WorkerProcess` (real ``reson8-kafka worker`` processes),
produces sessions with :func:`session_records`, and reads the output topics
with :class:`Outputs` until a condition holds (never a fixed sleep).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from emulator.tones import VOCABULARY
from schemas.events import SessionEvent, TranscriptEvent, TurnEvent, parse_event
from topology.admin import apply_topology
from topology.connection import KafkaSettings, client_kwargs
from topology.topics import build_topology
from workers.probe import http_status

REPO = Path(__file__).resolve().parents[2]
Event = TranscriptEvent | TurnEvent | SessionEvent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Stack:
    """Topic names and group of one test."""

    kafka: KafkaSettings
    prefix: str
    partitions: int = 4

    @property
    def audio_topic(self) -> str:
        return self.prefix + "stt.audio"

    def topic(self, name: str) -> str:
        return self.prefix + name

    async def create_topics(self) -> None:
        await apply_topology(self.kafka, build_topology(self.prefix, partitions=self.partitions))


@dataclass
class WorkerProcess:
    """A real worker process (``python -m workers.cli worker``)."""

    stack: Stack
    api_url: str
    log_path: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    web_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    _log: Any = None

    def start(self) -> None:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.stack.kafka.bootstrap_servers,
            "RESON8_API_URL": self.api_url,
            "RESON8_API_KEY": "test-key-not-secret",
            "RESON8_KAFKA_APP_ID": self.stack.prefix + "worker",
            "RESON8_KAFKA_TOPIC_PREFIX": self.stack.prefix,
            "RESON8_KAFKA_PARTITIONS": str(self.stack.partitions),
            "RESON8_KAFKA_WEB_PORT": str(self.web_port),
            "RESON8_KAFKA_WEB_HOST": "127.0.0.1",
            "RESON8_KAFKA_IDLE_FLUSH_S": "1",
            "RESON8_KAFKA_RETRY_INITIAL_S": "0.05",
            "RESON8_KAFKA_RETRY_MAX_S": "0.5",
            **self.env_extra,
        }
        self._log = log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "worker"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    async def ready(self, timeout_s: float = 60.0) -> None:
        """Wait until ``/ready`` answers 200 (consumer joined, not rebalancing)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            if await http_status(self.web_port, "/ready") == 200:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"worker not ready in {timeout_s}s; log: {self.log_tail()}")

    async def metrics(self) -> Metrics:
        """A scrape of ``/metrics``, the way Prometheus reads it."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{self.web_port}/metrics") as response,
        ):
            assert response.status == 200, response.status
            assert response.content_type == "text/plain"
            return Metrics.parse(await response.text())

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"worker exited {self.proc.returncode}: {self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout_s: float = 60.0) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError("worker did not exit")
            await asyncio.sleep(0.1)
        return self.proc.returncode

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._log is not None:
            self._log.close()


@dataclass
class Metrics:
    """Samples of one scrape: ``value(name, **labels)`` sums the matching series."""

    samples: list[tuple[str, dict[str, str], float]]

    @classmethod
    def parse(cls, text: str) -> Metrics:
        return cls(
            [
                (sample.name, dict(sample.labels), sample.value)
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            ]
        )

    def value(self, name: str, **labels: str) -> float:
        return sum(
            v
            for n, have, v in self.samples
            if n == name and all(have.get(k) == want for k, want in labels.items())
        )

    def has(self, name: str) -> bool:
        return any(n == name for n, _, _ in self.samples)


@dataclass(frozen=True)
class Chunk:
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()


def session_records(
    audio: bytes,
    *,
    chunk_bytes: int,
    first_headers: Iterable[tuple[str, bytes]] = (),
    end: bool = True,
) -> list[Chunk]:
    """Cut ``audio`` into records; configuration headers on the first, ``end`` last."""
    chunks = [Chunk(audio[i : i + chunk_bytes]) for i in range(0, len(audio), chunk_bytes)]
    chunks[0] = Chunk(chunks[0].value, tuple(first_headers))
    if end:
        chunks.append(Chunk(b"", (("stt-kind", b"end"),)))
    return chunks


async def produce_sessions(
    stack: Stack, sessions: dict[str, list[Chunk]], *, interleave: bool = True
) -> None:
    """Produce every session's chunks (interleaved like live calls), acks=all."""
    producer = AIOKafkaProducer(**client_kwargs(stack.kafka), acks="all")
    await producer.start()
    try:
        order = _interleaved(sessions) if interleave else _sequential(sessions)
        futures = [
            await producer.send(
                stack.audio_topic, c.value, key=sid.encode(), headers=list(c.headers)
            )
            for sid, c in order
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def produce_live(
    stack: Stack, sessions: dict[str, list[Chunk]], *, chunk_s: float, speed: float = 1.0
) -> None:
    """Produce like live calls: one chunk of every session per ``chunk_s`` of
    audio, paced at ``speed`` times real time (a schedule, not a wait)."""
    producer = AIOKafkaProducer(**client_kwargs(stack.kafka), acks="all")
    await producer.start()
    try:
        start = time.monotonic()
        longest = max(len(chunks) for chunks in sessions.values())
        for i in range(longest):
            due = start + i * chunk_s / speed
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            futures = [
                await producer.send(
                    stack.audio_topic, c[i].value, key=sid.encode(), headers=list(c[i].headers)
                )
                for sid, c in sessions.items()
                if i < len(c)
            ]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def produce_records(
    stack: Stack, records: Iterable[tuple[bytes | None, bytes, Sequence[tuple[str, bytes]]]]
) -> None:
    """Produce ``(key, value, headers)`` records as they are (any key, even none), acks=all."""
    producer = AIOKafkaProducer(
        **client_kwargs(stack.kafka), acks="all", max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    try:
        futures = [
            await producer.send(stack.audio_topic, value, key=key, headers=list(headers))
            for key, value, headers in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def committed_offsets(stack: Stack, group: str) -> dict[int, int]:
    """The group's committed offsets of ``stt.audio``, by partition."""
    admin = AIOKafkaAdminClient(**client_kwargs(stack.kafka))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {
        tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == stack.audio_topic
    }


async def end_offsets(stack: Stack, topic: str | None = None) -> dict[int, int]:
    """The end offset of every partition of ``topic`` (``stt.audio`` by default)."""
    consumer = AIOKafkaConsumer(**client_kwargs(stack.kafka), group_id=None)
    await consumer.start()
    try:
        name = topic or stack.audio_topic
        tps = [TopicPartition(name, p) for p in range(stack.partitions)]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


def keys_on_partitions(stem: str, partitions: int, per_partition: int = 1) -> list[str]:
    """Session ids that the default partitioner spreads evenly: ``per_partition``
    on each partition, so every worker of a group owns some."""
    from aiokafka.partitioner import DefaultPartitioner

    choose = DefaultPartitioner()
    everything = list(range(partitions))
    wanted = {p: per_partition for p in everything}
    found: list[str] = []
    n = 0
    while any(wanted.values()):
        key = f"{stem}-{n}"
        n += 1
        partition = choose(key.encode(), everything, everything)
        if wanted[partition]:
            wanted[partition] -= 1
            found.append(key)
    return found


def _interleaved(sessions: dict[str, list[Chunk]]) -> list[tuple[str, Chunk]]:
    longest = max(len(chunks) for chunks in sessions.values())
    return [
        (sid, chunks[i])
        for i in range(longest)
        for sid, chunks in sessions.items()
        if i < len(chunks)
    ]


def _sequential(sessions: dict[str, list[Chunk]]) -> list[tuple[str, Chunk]]:
    return [(sid, c) for sid, chunks in sessions.items() for c in chunks]


@dataclass
class Received:
    topic: str
    event: Event
    headers: dict[str, bytes]
    produced: float  # the worker's send time (the record's timestamp), wall clock
    at: float = field(default_factory=time.monotonic)  # when this test read it


class Outputs:
    """Reads the output topics from the beginning (no group, nothing committed),
    in a background task that never pauses while the test waits for other
    things; :meth:`until` waits on what it has read."""

    def __init__(self, stack: Stack, topics: Sequence[str] | None = None) -> None:
        names = topics or ("stt.transcripts", "stt.turns", "stt.sessions")
        self._topics = [stack.topic(n) for n in names]
        self._stack = stack
        self.received: list[Received] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._news = asyncio.Event()

    async def __aenter__(self) -> Outputs:
        self._consumer = AIOKafkaConsumer(
            **client_kwargs(self._stack.kafka),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await self._consumer.start()
        parts = range(self._stack.partitions)  # output topics are co-partitioned
        tps = [TopicPartition(topic, p) for topic in self._topics for p in parts]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._reader = asyncio.create_task(self._read(self._consumer))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._consumer is not None
        assert self._reader is not None
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self._consumer.stop()

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                self.received.extend(_received(record) for record in records)
            self._news.set()

    async def until(self, done: Callable[[list[Received]], bool], timeout_s: float = 60.0) -> None:
        """Wait until ``done(received)`` holds; fail the test after ``timeout_s``."""
        assert self._reader is not None
        deadline = time.monotonic() + timeout_s
        while not done(self.received):
            if self._reader.done():
                self._reader.result()  # the reader's error, if any
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                summary = [(r.event.type, r.event.session_id) for r in self.received][-30:]
                raise AssertionError(f"condition not met in {timeout_s}s; last events: {summary}")
            self._news.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._news.wait(), min(remaining, 1.0))

    def events(self, kind: str | None = None, session: str | None = None) -> list[Event]:
        return [
            r.event
            for r in self.received
            if (kind is None or r.event.type == kind)
            and (session is None or r.event.session_id == session)
        ]

    def finals(self, session: str, channel: int | None = None) -> list[tuple[str, int, int]]:
        """Deduplicated finals (by event_id) as (text, start_ms, duration_ms), in time order."""
        seen: dict[str, tuple[str, int, int]] = {}
        for event in self.events("transcript", session):
            assert isinstance(event, TranscriptEvent)
            if event.is_final and event.channel == channel:
                seen[event.event_id] = (event.text, event.start_ms or 0, event.duration_ms or 0)
        return sorted(seen.values(), key=lambda f: f[1])

    def final_times(self, session: str) -> list[float]:
        """When the worker sent each of ``session``'s finals (record timestamps)."""
        return sorted(
            r.produced
            for r in self.received
            if r.event.session_id == session
            and isinstance(r.event, TranscriptEvent)
            and r.event.is_final
        )

    def ended(self, sessions: Iterable[str]) -> Callable[[list[Received]], bool]:
        wanted = set(sessions)

        def check(received: list[Received]) -> bool:
            done = {
                r.event.session_id
                for r in received
                if r.event.type in ("session_ended", "session_failed")
            }
            return wanted <= done

        return check


def _received(record: Any) -> Received:
    headers = dict(record.headers or [])
    return Received(record.topic, parse_event(record.value), headers, record.timestamp / 1000)


async def dlq_records(stack: Stack, count: int, timeout_s: float = 30.0) -> list[Any]:
    """The first ``count`` records of the dead-letter topic."""
    from tests.kafka_fixtures import consume

    return await consume(stack.kafka, stack.topic("stt.audio.dlq"), count, timeout_s=timeout_s)


__all__ = [
    "Chunk",
    "Metrics",
    "Outputs",
    "Stack",
    "WorkerProcess",
    "committed_offsets",
    "dlq_records",
    "end_offsets",
    "free_port",
    "keys_on_partitions",
    "produce_live",
    "produce_records",
    "produce_sessions",
    "session_records",
    "signal",
]


def spoken(count: int, *, stride: int, longest: int) -> list[list[str]]:
    """``count`` utterances of 1 to ``longest`` words, walking the tone
    recognizer's vocabulary ``stride`` words at a time (a call's script)."""
    words = list(VOCABULARY)
    return [
        [words[(i * stride + j) % len(words)] for j in range(1 + i % longest)] for i in range(count)
    ]
