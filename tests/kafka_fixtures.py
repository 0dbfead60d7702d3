"""pytest plugin: a real Kafka broker for the tests that need one.

Loaded from ``tests/conftest.py`` (``pytest_plugins = ["tests.kafka_fixtures"]``).

Fixtures:

- ``kafka_settings`` (session): :class:`topology.connection.KafkaSettings`
  of the test cluster. ``KAFKA_BOOTSTRAP_SERVERS`` (plus the other
  ``KAFKA_*`` variables) when set, nothing started; else a local broker on a
  free port with its data in a temporary folder, stopped at session end.
- ``kafka_bootstrap`` (session): its ``host:port`` string.
- ``topic_prefix``: a prefix unique to the test (``"t.<test>.<hex>."``);
  topics under it are deleted after the test when the test used Kafka.
- ``new_topic``: async factory ``await new_topic("audio", partitions=3)``
  returning the created topic's full name (prefixed, unique to the test).
- ``kafka``: a :class:`KafkaTestClient` bound to the cluster:
  ``await kafka.produce(topic, [Record(b"v", key=b"k", headers=[("h", b"1")])])``,
  ``await kafka.consume(topic, 3, timeout_s=30)``.

Every test that uses ``kafka_settings`` (directly or through the fixtures
above) is marked ``kafka`` automatically, so ``-m "not kafka"`` skips them.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from topology import broker
from topology.connection import KafkaSettings, client_kwargs

NewTopic = Callable[..., Awaitable[str]]


@dataclass(frozen=True)
class Record:
    """One record to produce; ``partition=None`` lets the key choose."""

    value: bytes | None
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = ()
    partition: int | None = None


async def produce(
    settings: KafkaSettings, topic: str, records: Iterable[Record | bytes]
) -> list[Any]:
    """Send ``records`` with acks=all, wait for every ack, return their RecordMetadata."""
    from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped,unused-ignore]

    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        futures = []
        for item in records:
            rec = item if isinstance(item, Record) else Record(item)
            futures.append(
                await producer.send(
                    topic,
                    rec.value,
                    key=rec.key,
                    headers=list(rec.headers),
                    partition=rec.partition,
                )
            )
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


async def consume(
    settings: KafkaSettings, topic: str, count: int, *, timeout_s: float = 30.0
) -> list[Any]:
    """Read the first ``count`` records of ``topic`` (all partitions, from the start).

    No consumer group is used, so nothing is committed. Fails the test
    (AssertionError) when fewer than ``count`` arrive within ``timeout_s``.
    Records come grouped by partition, each partition in offset order.
    """
    from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped,unused-ignore]

    # group_id=None with a topic: aiokafka assigns every partition, no group, no commits.
    consumer = AIOKafkaConsumer(
        topic,
        **client_kwargs(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        return await _drain(consumer, topic, count, timeout_s)
    finally:
        await consumer.stop()


async def _drain(consumer: Any, topic: str, count: int, timeout_s: float) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"got {len(got)} of {count} records from {topic} in {timeout_s}s")
        batches = await consumer.getmany(timeout_ms=int(min(remaining, 1.0) * 1000))
        for records in batches.values():
            got.extend(records)
    return sorted(got[:count], key=lambda r: (r.partition, r.offset))


@dataclass(frozen=True)
class KafkaTestClient:
    """The helpers above, bound to the test cluster (the ``kafka`` fixture)."""

    settings: KafkaSettings

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap_servers

    async def produce(self, topic: str, records: Iterable[Record | bytes]) -> list[Any]:
        return await produce(self.settings, topic, records)

    async def consume(self, topic: str, count: int, *, timeout_s: float = 30.0) -> list[Any]:
        return await consume(self.settings, topic, count, timeout_s=timeout_s)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaSettings]:
    settings = KafkaSettings.from_env()
    if settings.bootstrap_servers:
        yield settings
        return
    state_dir = tmp_path_factory.mktemp("kafka")
    state = broker.up(port=None, state_dir=state_dir)
    try:
        yield settings.with_bootstrap(state.bootstrap)
    finally:
        broker.down(state_dir)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_settings: KafkaSettings) -> str:
    return kafka_settings.bootstrap_servers


@pytest.fixture
def kafka(kafka_settings: KafkaSettings) -> KafkaTestClient:
    return KafkaTestClient(kafka_settings)


async def _delete_prefixed(settings: KafkaSettings, prefix: str) -> None:
    from topology.admin import admin_client, delete_topics

    async with admin_client(settings) as admin:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await delete_topics(admin, names)


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    # '-' only: Kafka warns when names differ by '.' versus '_' (metric name collision).
    name = re.sub(r"[^A-Za-z0-9-]+", "-", request.node.name)[:60].strip("-")
    prefix = f"t.{name}.{uuid.uuid4().hex[:8]}."
    yield prefix
    if "kafka_settings" in request.fixturenames:
        settings: KafkaSettings = request.getfixturevalue("kafka_settings")
        asyncio.run(_delete_prefixed(settings, prefix))


@pytest.fixture
async def new_topic(kafka_settings: KafkaSettings, topic_prefix: str) -> NewTopic:
    from topology.admin import admin_client, create_topics
    from topology.topics import TopicSpec

    async def factory(
        name: str = "topic", *, partitions: int = 1, configs: dict[str, str] | None = None
    ) -> str:
        spec = TopicSpec(topic_prefix + name, partitions, 1, configs or {})
        async with admin_client(kafka_settings) as admin:
            await create_topics(admin, [spec])
        return spec.name

    return factory


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "kafka_settings" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)
