"""Registry: routing, dead letters, containment, acks in order, takeover glue, on fakes.

The upstream is tests.unit.fakes.FakeServer, the producer FakeProducer, the
checkpoint table MemoryCheckpoints, acks a list: no sockets, no Kafka.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from schemas.envelope import SessionConfig
from schemas.events import parse_event
from tests.unit.fakes import FakeProducer, FakeServer
from workers import registry as registry_module
from workers.checkpoint import Checkpoint, StreamCheckpoint
from workers.checkpointer import MemoryCheckpoints
from workers.publisher import OutputTopics, Publisher, Record
from workers.registry import Registry
from workers.session import Session
from workers.settings import Settings
from workers.telemetry import Telemetry

TOPICS = OutputTopics("out.t", "out.u", "out.s", "out.dlq")
SETTINGS = Settings(
    retry_initial_s=0.001,
    retry_max_s=0.005,
    idle_flush_s=0.2,
    end_timeout_s=2.0,
    max_record_bytes=32768,
    producer_max_request_bytes=32768 + 65536,
)
RAW = [("stt-encoding", b"pcm_s16le"), ("stt-sample-rate", b"8000")]


def words(*values: int) -> bytes:
    silence = b"\x00\x00" * 800
    return silence + b"".join(struct.pack("<h", v) * 800 + silence for v in values)


@dataclass
class Offsets:
    high: dict[int, int] = field(default_factory=dict)
    commit: dict[int, int] = field(default_factory=dict)

    def committed(self, partition: int) -> int | None:
        return self.commit.get(partition)

    def highwater(self, partition: int) -> int | None:
        return self.high.get(partition)


@dataclass
class World:
    registry: Registry
    producer: FakeProducer
    server: FakeServer
    acked: list[int]
    store: MemoryCheckpoints
    offsets: Offsets
    offset: int = 0

    async def send(
        self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] = (), p: int = 0
    ) -> int:  # type: ignore[assignment]
        offset = self.offset
        self.offset += 1
        await self.registry.handle(
            Record("in", p, offset, key, value, list(headers), int(time.time() * 1000), offset)
        )
        self.offsets.high[p] = self.offset
        return offset

    def events(self, kind: str | None = None) -> list[Any]:
        topics = (TOPICS.transcripts, TOPICS.turns, TOPICS.sessions)
        events = [parse_event(r.value or b"") for r in self.producer.records if r.topic in topics]
        return [e for e in events if kind is None or e.type == kind]

    def dead_letters(self) -> list[tuple[bytes | None, str]]:
        return [
            (r.key, r.headers["stt-error-code"].decode())
            for r in self.producer.on(TOPICS.dead_letters)
        ]

    async def until(self, predicate: Any, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert time.monotonic() < deadline, "condition not met"
            await self.registry.tick()
            await self.registry.checkpointer.save_all(
                s for s in (self.registry.session(k) for k in ("a", "b", "c")) if s
            )
            await _yield()


async def _yield() -> None:
    import asyncio

    await asyncio.sleep(0.01)  # let the pumps' tasks run (the loop, not a timed wait)


@pytest.fixture
def world() -> World:
    producer, server, acked = FakeProducer(), FakeServer(), []
    store, offsets = MemoryCheckpoints(), Offsets()

    async def ack(handle: Any) -> None:
        acked.append(handle)

    publisher = Publisher(producer, Telemetry(), TOPICS, max_record_bytes=32768 + 65536)
    registry = Registry(
        SETTINGS, publisher, ack, Telemetry(), checkpoints=store, offsets=offsets, connector=server
    )
    registry.assign({0, 1})
    return World(registry, producer, server, acked, store, offsets)


async def test_a_session_is_transcribed_and_its_records_acked_in_order(world: World) -> None:
    await world.send(b"a", words(1001), RAW)
    await world.send(b"a", words(1002))
    await world.send(b"a", b"", [("stt-kind", b"end")])
    await world.until(lambda: world.events("session_ended"))
    await world.until(lambda: world.acked == [0, 1, 2])
    assert [e.text for e in world.events("transcript")] == ["w1001", "w1002"]
    assert world.store.get("a") is not None  # the closing entry
    assert world.store.data["a"].state == "ended"


@pytest.mark.parametrize(
    ("key", "value", "headers", "code"),
    [
        (None, b"\x00" * 16, RAW, "missing_key"),
        (b"\xff\xfe", b"\x00" * 16, RAW, "bad_key"),
        (b"b", b"\x00" * 40000, RAW, "oversized"),
        (b"b", b"\x00" * 16, [("stt-kind", b"pause")], "bad_header"),
        (b"b", b"junk junk junk", [], "undecodable_audio"),
    ],
)
async def test_bad_records_are_dead_lettered_and_the_partition_moves_on(
    world: World, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]], code: str
) -> None:
    await world.send(key, value, headers)
    await world.send(b"a", words(1001), RAW)
    await world.send(b"a", b"", [("stt-kind", b"end")])
    await world.until(lambda: world.acked == [0, 1, 2])
    assert world.dead_letters() == [(key, code)]


async def test_a_dead_letter_is_acked_only_once_it_is_durable(world: World) -> None:
    class Broken(Exception):  # a retriable producer error
        pass

    world.producer.fail[TOPICS.dead_letters] = Broken()
    await world.send(b"c", b"\x00" * 16, [("stt-kind", b"pause")])
    for _ in range(5):
        await _yield()
    assert world.acked == []  # the dead letter is retried; the record waits
    del world.producer.fail[TOPICS.dead_letters]
    await world.until(lambda: world.acked == [0])


async def test_later_records_of_a_failed_session_are_dead_lettered(world: World) -> None:
    await world.send(b"a", b"not a container", [])  # fails at once: no container header
    await world.send(b"a", b"more", [])
    await world.until(lambda: world.events("session_failed"))
    await world.until(lambda: len(world.dead_letters()) == 2)
    await world.send(b"a", b"still more", [])
    await world.until(lambda: len(world.dead_letters()) == 3)
    assert [code for _, code in world.dead_letters()][-1] == "session_failed"
    await world.until(lambda: world.acked == [0, 1, 2])


async def test_an_unexpected_error_costs_its_session_only(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Buggy(Session):
        def on_record(self, offset: int, *args: Any, **kw: Any) -> bool:
            if offset == 1:
                raise ZeroDivisionError("a bug")
            return super().on_record(offset, *args, **kw)

    monkeypatch.setattr(registry_module, "Session", Buggy)
    await world.send(b"a", words(1001), RAW)
    await world.send(b"a", words(1002))  # the bug: contained
    await world.send(b"b", words(1003), RAW)  # another session on the partition goes on
    await world.send(b"b", b"", [("stt-kind", b"end")])
    await world.until(lambda: world.events("session_ended"))
    [failed] = world.events("session_failed")
    assert (failed.session_id, failed.code) == ("a", "internal_error")
    assert (b"a", "internal_error") in world.dead_letters()
    assert [e.text for e in world.events("transcript") if e.session_id == "b"] == ["w1003"]


async def test_a_taken_over_session_skips_what_was_done_and_resumes(world: World) -> None:
    saved = Checkpoint(
        session_id="a",
        partition=0,
        offset=1,
        record_byte=len(words(1001)),
        config=SessionConfig(encoding="pcm_s16le", sample_rate=8000),
        streams=(StreamCheckpoint(covered=len(words(1001)) // 2, finals=1, connections=1),),
        prior_finals=0,
    )
    saved = saved.model_copy(
        update={"restart": saved.restart.model_copy(update={"byte": saved.record_byte})}
    )
    saved = saved.model_copy(
        update={"restart": saved.restart.model_copy(update={"frame": len(words(1001)) // 2})}
    )
    world.store.data["a"] = saved
    await world.send(b"a", words(1001), RAW)  # offset 0: done by the previous owner
    await world.send(b"a", words(1002))
    await world.send(b"a", b"", [("stt-kind", b"end")])
    await world.until(lambda: world.events("session_ended"))
    assert world.events("session_started") == []
    [connected] = world.events("upstream_reconnected")
    assert connected.reason == "takeover"
    finals = world.events("transcript")
    assert [(f.text, f.start_ms) for f in finals] == [("w1002", 400)]
    [ended] = world.events("session_ended")
    assert ended.finals == 2


async def test_a_partition_given_back_by_a_rebalance_keeps_its_sessions(world: World) -> None:
    first = Record("in", 0, 0, b"a", words(1001), RAW, int(time.time() * 1000), 0)
    await world.registry.handle(first)
    world.offset = 1
    await world.until(lambda: world.events("transcript"))
    await world.registry.revoke({0, 1}, timeout_s=2.0)
    assert world.store.get("a") is not None  # written before anyone else could read it
    assert world.registry.active == 1  # held, not drained
    kept, moved = await world.registry.reassigned({0, 1})
    assert (kept, moved) == ({0, 1}, set())
    await world.registry.handle(first)  # read again from the committed offset
    await world.send(b"a", words(1002))
    await world.send(b"a", b"", [("stt-kind", b"end")])
    await world.until(lambda: world.events("session_ended"))
    assert [e.text for e in world.events("transcript")] == ["w1001", "w1002"]  # none twice
    assert len(world.server.opened) == 1  # the same upstream connection throughout
    assert world.events("upstream_reconnected") == []
    await world.until(lambda: 2 in world.acked)


async def test_a_partition_that_moved_closes_its_sessions_and_leaves_the_checkpoint(
    world: World,
) -> None:
    world.registry.checkpointer._interval_s = 3600.0  # only the rebalance writes checkpoints
    await world.send(b"a", words(1001), RAW, p=0)
    await world.send(b"b", words(1002), RAW, p=1)
    await world.send(b"a", words(1003), p=0)  # its final covers all of offset 0
    await world.send(b"b", words(1004), p=1)
    while len(world.events("transcript")) < 4:
        await world.registry.tick()
        await _yield()
    await world.registry.revoke({0, 1}, timeout_s=2.0)
    await world.registry.tick()
    assert world.acked == []  # covered and checkpointed, but acks of a revoked generation
    kept, moved = await world.registry.reassigned({1})
    assert (kept, moved) == ({1}, {0})
    assert world.registry.session("a") is None
    assert world.registry.session("b") is not None
    assert world.store.get("a") is not None  # the new owner resumes from it
    assert world.events("session_ended") == []  # closed here, not ended: it goes on elsewhere
    await world.registry.tick()
    assert 0 not in world.acked  # the moved partition's records are its new owner's
