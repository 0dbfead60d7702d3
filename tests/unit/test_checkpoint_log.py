"""CheckpointLog, without a broker: the table kept in memory and the records
it produces to the compacted ``stt.checkpoints`` topic.

``put``/``delete`` produce the entry (or a tombstone) keyed by session id to
the session's own partition; ``_apply`` is the handler :meth:`load` feeds
each changelog record to (the broker part is tested in tests/integration):
it skips unreadable values and entries that belong to another partition and
applies tombstones; ``forget`` drops the entries of revoked partitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from schemas.envelope import SessionConfig
from topology.connection import KafkaSettings
from workers.checkpoint import Checkpoint
from workers.checkpoint_log import CheckpointLog

TOPIC = "stt.checkpoints"
RAW = SessionConfig(encoding="pcm_s16le", sample_rate=8000)


@dataclass
class Sends:
    """The ``send`` callable: keeps (topic, key, value, partition)."""

    records: list[tuple[str, bytes, bytes | None, int]] = field(default_factory=list)

    async def __call__(self, topic: str, key: bytes, value: bytes | None, partition: int) -> None:
        self.records.append((topic, key, value, partition))


@pytest.fixture
def sends() -> Sends:
    return Sends()


@pytest.fixture
def log(sends: Sends) -> CheckpointLog:
    return CheckpointLog(TOPIC, sends, KafkaSettings())


def entry(
    session_id: str = "call-1", partition: int = 2, offset: int = 10, **kw: object
) -> Checkpoint:
    return Checkpoint.model_validate(
        {"session_id": session_id, "partition": partition, "offset": offset, "config": RAW, **kw}
    )


# -- the store --------------------------------------------------------------------------


async def test_put_produces_the_entry_to_its_sessions_partition(
    log: CheckpointLog, sends: Sends
) -> None:
    checkpoint = entry(partition=2)
    await log.put(checkpoint)
    assert sends.records == [(TOPIC, b"call-1", checkpoint.to_bytes(), 2)]
    assert log.get("call-1") == checkpoint


async def test_a_later_put_replaces_the_entry(log: CheckpointLog) -> None:
    await log.put(entry(offset=10))
    await log.put(entry(offset=12))
    assert [c.offset for c in log.values()] == [12]


async def test_delete_produces_a_tombstone_and_forgets_the_entry(
    log: CheckpointLog, sends: Sends
) -> None:
    await log.put(entry(partition=5))
    await log.delete(5, "call-1")
    assert sends.records[-1] == (TOPIC, b"call-1", None, 5)
    assert log.get("call-1") is None
    assert log.values() == []


async def test_values_lists_every_entry(log: CheckpointLog) -> None:
    await log.put(entry("a", partition=1))
    await log.put(entry("b", partition=2))
    assert sorted(c.session_id for c in log.values()) == ["a", "b"]


# -- reading the changelog ----------------------------------------------------------------


def test_a_changelog_record_becomes_an_entry(log: CheckpointLog) -> None:
    checkpoint = entry(partition=3, state="ended")
    log._apply(b"call-1", checkpoint.to_bytes(), 3)
    assert log.get("call-1") == checkpoint


def test_the_last_record_of_a_key_wins(log: CheckpointLog) -> None:
    log._apply(b"call-1", entry(partition=3, offset=10).to_bytes(), 3)
    log._apply(b"call-1", entry(partition=3, offset=20).to_bytes(), 3)
    found = log.get("call-1")
    assert found is not None
    assert found.offset == 20


def test_a_tombstone_removes_the_entry(log: CheckpointLog) -> None:
    log._apply(b"call-1", entry(partition=3).to_bytes(), 3)
    log._apply(b"call-1", None, 3)
    assert log.get("call-1") is None


@pytest.mark.parametrize(
    "value",
    [b"not json", b'{"session_id": "call-1"}', b"\xff\xfe", b'{"version": 9}'],
    ids=["not json", "incomplete", "not utf-8", "unknown version"],
)
def test_an_unreadable_value_is_skipped_and_the_last_good_entry_kept(
    log: CheckpointLog, value: bytes
) -> None:
    good = entry(partition=3)
    log._apply(b"call-1", good.to_bytes(), 3)
    log._apply(b"call-1", value, 3)
    log._apply(b"other", value, 3)
    assert log.values() == [good]


def test_an_entry_of_another_partition_is_skipped(log: CheckpointLog) -> None:
    log._apply(b"call-1", entry(partition=7).to_bytes(), 3)
    assert log.get("call-1") is None


def test_a_record_without_key_is_skipped(log: CheckpointLog) -> None:
    log._apply(None, entry().to_bytes(), 2)
    log._apply(b"", entry().to_bytes(), 2)
    assert log.values() == []


def test_forget_drops_only_the_entries_of_the_given_partitions(log: CheckpointLog) -> None:
    for session_id, partition in [("a", 1), ("b", 2), ("c", 3)]:
        log._apply(session_id.encode(), entry(session_id, partition).to_bytes(), partition)
    log.forget({1, 3})
    assert [c.session_id for c in log.values()] == ["b"]
