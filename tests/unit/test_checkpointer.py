"""Checkpointer: checkpoints of live sessions, closing entries, orphans.

Real :class:`Session` objects (raw pcm_s16le, driven as in test_session.py),
a :class:`MemoryCheckpoints` store that keeps a journal, a real
:class:`Publisher` on a fake producer and a real :class:`Telemetry`. Covers:
a checkpoint is written only when the position moved, always before the
records below it are released (``on_saved``); a finished session's closing
entry; its deletion once the commit passed it; orphans ended with a
``session_ended`` that goes through the publisher (issue 12: it was sent
without CloudEvents headers or traceparent); revoked partitions forgotten; one
failing write does not stop the others.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from schemas.envelope import RecordHeaders, SessionConfig
from schemas.events import event_id
from schemas.wire import FlushConfirmation, FlushRequest, Transcript
from workers.checkpoint import Checkpoint, StreamCheckpoint
from workers.checkpointer import Checkpointer, MemoryCheckpoints
from workers.link import RetryPolicy
from workers.publisher import OutputTopics, Publisher
from workers.session import LinkKey, Session, SessionPolicy
from workers.telemetry import Telemetry

RATE = 8000
RAW = SessionConfig(encoding="pcm_s16le", sample_rate=RATE)
POLICY = SessionPolicy()
KEY: LinkKey = (0, 0)
AUDIO = RecordHeaders()
END = RecordHeaders(kind="end")
PARTITION = 3
IDLE_S = 300.0
TOPICS = OutputTopics("stt.transcripts", "stt.turns", "stt.sessions", "stt.audio.dlq")
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


# -- stand-ins -------------------------------------------------------------------------


@dataclass
class FakeProducer:
    sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = field(
        default_factory=list
    )

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        partition: int | None = None,
    ) -> Awaitable[Any]:
        self.sent.append((topic, key, value, list(headers)))
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ack.set_result(None)
        return ack


class JournalStore(MemoryCheckpoints):
    """MemoryCheckpoints that logs its writes in a shared journal and can fail
    the writes of some sessions."""

    def __init__(self, journal: list[tuple[Any, ...]]) -> None:
        super().__init__()
        self.journal = journal
        self.failing: set[str] = set()

    async def put(self, checkpoint: Checkpoint) -> None:
        if checkpoint.session_id in self.failing:
            raise OSError("broker gone")
        self.journal.append(("put", checkpoint.session_id, checkpoint.offset, checkpoint.state))
        await super().put(checkpoint)

    async def delete(self, partition: int, session_id: str) -> None:
        self.journal.append(("delete", session_id))
        await super().delete(partition, session_id)


@dataclass
class Rig:
    checkpointer: Checkpointer
    store: JournalStore
    producer: FakeProducer
    telemetry: Telemetry
    journal: list[tuple[Any, ...]]

    def puts(self) -> list[tuple[Any, ...]]:
        return [entry for entry in self.journal if entry[0] == "put"]

    def released(self) -> list[tuple[Any, ...]]:
        return [entry for entry in self.journal if entry[0] == "saved"]


@pytest.fixture
def rig() -> Rig:
    journal: list[tuple[Any, ...]] = []
    store = JournalStore(journal)
    producer, telemetry = FakeProducer(), Telemetry()
    publisher = Publisher(producer, telemetry, TOPICS, retry=RetryPolicy(initial_s=0, max_s=0))

    async def on_saved(session: Session, before: int | None) -> None:
        # what the store holds at release time shows the write came first
        held = store.get(session.session_id)
        journal.append(("saved", session.session_id, before, held.offset if held else None))

    checkpointer = Checkpointer(
        store, publisher, telemetry, on_saved, upstream_rate=16000, idle_timeout_s=IDLE_S
    )
    return Rig(checkpointer, store, producer, telemetry, journal)


def session(session_id: str = "call-1", first_offset: int = 5) -> Session:
    """A session holding two records of 100 ms each, nothing covered yet."""
    s = Session(session_id, PARTITION, POLICY, config=RAW, now=0.0)
    s.on_record(first_offset, AUDIO, b"\x01\x00" * 800, now=0.0)
    s.on_record(first_offset + 1, AUDIO, b"\x01\x00" * 800, now=0.0)
    s.on_connected(KEY, 0.0)
    s.outgoing(KEY, 0.0)
    return s


def cover_first_record(s: Session) -> None:
    """The upstream finalizes the first 100 ms and its final is published."""
    s.on_message(KEY, Transcript(text="one", start_ms=0, duration_ms=100), 0.1)
    for output in s.take_outputs():
        s.on_published(output)


def ended_session(session_id: str = "done", last_offset: int = 9) -> Session:
    s = Session(session_id, PARTITION, POLICY, config=RAW, now=0.0)
    s.on_record(last_offset - 1, AUDIO, b"\x00\x00" * 80, now=0.0)
    s.on_record(last_offset, END, b"", now=0.0)
    s.on_connected(KEY, 0.0)
    for item in s.outgoing(KEY, 0.0):
        if isinstance(item, FlushRequest):
            s.on_message(KEY, FlushConfirmation(id=item.id), 0.0)
    for output in s.take_outputs():
        s.on_published(output)
    s.tick(0.1, quiet_s=0.0)
    assert s.state == "ended"
    return s


def orphan(session_id: str = "orphan", state: Any = "open") -> Checkpoint:
    """A checkpoint inherited from another worker: 2 s covered, 5 finals, 2 reconnects."""
    return Checkpoint(
        session_id=session_id,
        partition=PARTITION,
        state=state,
        offset=10,
        config=RAW,
        streams=(StreamCheckpoint(covered=2 * RATE, finals=3, reconnects=1),),
        prior_finals=2,
        prior_reconnects=1,
    )


def nothing_live(session_id: str) -> bool:
    return False


def not_owned(entry: Checkpoint) -> float | None:
    return None


def quiet_for(seconds: float | None) -> Callable[[Checkpoint], float | None]:
    """``orphan_quiet``: every entry's partition has been quiet this long (None: not owned)."""
    return lambda entry: seconds


# -- live sessions -------------------------------------------------------------------------


async def test_save_writes_the_checkpoint_then_releases_the_records_below_it(rig: Rig) -> None:
    s = session(first_offset=5)
    await rig.checkpointer.save(s)
    assert rig.journal == [("put", "call-1", 5, "open"), ("saved", "call-1", 5, 5)]
    assert rig.store.get("call-1") == s.checkpointed
    assert s.ack_before == 5


async def test_save_without_progress_writes_nothing_but_still_releases(rig: Rig) -> None:
    s = session()
    await rig.checkpointer.save(s)
    await rig.checkpointer.save(s)
    assert len(rig.puts()) == 1
    assert rig.released()[-1] == ("saved", "call-1", 5, 5)


async def test_save_after_progress_writes_the_new_position_before_releasing(rig: Rig) -> None:
    s = session(first_offset=5)
    await rig.checkpointer.save(s)
    cover_first_record(s)
    await rig.checkpointer.save(s)
    assert rig.journal[-2:] == [("put", "call-1", 6, "open"), ("saved", "call-1", 6, 6)]
    assert s.ack_before == 6


async def test_only_real_writes_are_counted_as_checkpoint_writes(rig: Rig) -> None:
    s = session()
    for _ in range(3):
        await rig.checkpointer.save(s)
    text = rig.telemetry.scrape().decode()
    assert re.search(r"reson8_checkpoint_writes_total\{[^}]*\} 1\.0", text)


async def test_a_session_before_its_first_record_has_nothing_to_save(rig: Rig) -> None:
    await rig.checkpointer.save(Session("empty", PARTITION, POLICY, config=RAW, now=0.0))
    assert rig.journal == []


async def test_due_sessions_are_saved_by_the_background_task(rig: Rig) -> None:
    task = asyncio.create_task(rig.checkpointer.run())
    try:
        s = session()
        rig.checkpointer.due(s)
        for _ in range(20):  # yield to the task until it has written (no clock)
            if rig.released():
                break
            await asyncio.sleep(0)
        assert rig.journal == [("put", "call-1", 5, "open"), ("saved", "call-1", 5, 5)]
    finally:
        task.cancel()


async def test_save_all_survives_one_failing_write_and_saves_the_others(rig: Rig) -> None:
    sessions = [session("a"), session("bad"), session("c")]
    rig.store.failing.add("bad")
    await rig.checkpointer.save_all(sessions)
    assert {e[1] for e in rig.puts()} == {"a", "c"}
    assert {e[1] for e in rig.released()} == {"a", "c"}
    assert sessions[1].ack_before == -1  # its records stay held


async def test_save_all_skips_finished_sessions(rig: Rig) -> None:
    await rig.checkpointer.save_all([ended_session(), session("live")])
    assert [e[1] for e in rig.puts()] == ["live"]


# -- finished sessions ------------------------------------------------------------------------


async def test_close_writes_an_ended_entry_then_releases_all_records(rig: Rig) -> None:
    s = ended_session(last_offset=9)
    await rig.checkpointer.close(s)
    assert rig.journal == [("put", "done", 10, "ended"), ("saved", "done", None, 10)]


async def test_close_of_a_failed_session_writes_a_failed_entry(rig: Rig) -> None:
    s = session("broken", first_offset=5)
    s.fail("upstream_refused", "HTTP 401")
    await rig.checkpointer.close(s)
    entry = rig.store.get("broken")
    assert entry is not None
    assert (entry.state, entry.offset, entry.closed) == ("failed", 7, True)
    assert rig.released() == [("saved", "broken", None, 7)]


async def test_a_closing_entry_is_deleted_once_the_commit_passed_it(rig: Rig) -> None:
    await rig.checkpointer.close(ended_session(last_offset=9))  # entry offset 10
    commit: dict[int, int | None] = {PARTITION: None}
    for position in (None, 9):
        commit[PARTITION] = position
        await rig.checkpointer.expire(commit.get, not_owned, nothing_live)
        assert rig.store.get("done") is not None
    commit[PARTITION] = 10
    await rig.checkpointer.expire(commit.get, not_owned, nothing_live)
    assert rig.store.get("done") is None
    assert rig.journal[-1] == ("delete", "done")


async def test_a_closed_entry_inherited_from_another_worker_is_deleted_too(rig: Rig) -> None:
    rig.store.data["old"] = orphan("old", state="ended")
    await rig.checkpointer.expire(lambda p: 10, quiet_for(1.0), nothing_live)  # seen, commit 10
    await rig.checkpointer.expire(lambda p: 10, quiet_for(1.0), nothing_live)
    assert rig.store.get("old") is None
    assert rig.producer.sent == []  # it ended on its owner's watch: nothing to emit


async def test_forget_leaves_the_entries_of_revoked_partitions_to_their_next_owner(
    rig: Rig,
) -> None:
    await rig.checkpointer.close(ended_session(last_offset=9))
    rig.checkpointer.forget({PARTITION})
    await rig.checkpointer.expire(lambda p: 10**9, not_owned, nothing_live)
    assert rig.store.get("done") is not None
    assert ("delete", "done") not in rig.journal


async def test_forget_keeps_the_entries_of_partitions_still_owned(rig: Rig) -> None:
    await rig.checkpointer.close(ended_session(last_offset=9))
    rig.checkpointer.forget({PARTITION + 1})
    await rig.checkpointer.expire(lambda p: 10**9, not_owned, nothing_live)
    assert rig.store.get("done") is None


# -- rebalances ------------------------------------------------------------------------------


async def _run_briefly(checkpointer: Checkpointer, done: Callable[[], bool]) -> None:
    """Let the background writer run until ``done`` or it has had its turns (no clock)."""
    task = asyncio.create_task(checkpointer.run())
    try:
        for _ in range(20):
            if done():
                break
            await asyncio.sleep(0)
    finally:
        task.cancel()


async def test_nothing_is_written_for_a_held_partition(rig: Rig) -> None:
    live, ended = session("live"), ended_session("done")
    rig.checkpointer.hold({PARTITION})
    rig.checkpointer.due(live)
    await _run_briefly(rig.checkpointer, lambda: bool(rig.journal))
    await rig.checkpointer.close(ended)
    assert rig.journal == []  # a later write could set the next owner back


async def test_what_waited_is_written_when_the_partition_stays(rig: Rig) -> None:
    live, ended = session("live"), ended_session("done")
    rig.checkpointer.hold({PARTITION})
    rig.checkpointer.due(live)
    await rig.checkpointer.close(ended)
    await rig.checkpointer.release({PARTITION})
    await _run_briefly(rig.checkpointer, lambda: len(rig.puts()) == 2)
    assert ("put", "done", 10, "ended") in rig.puts()
    assert ("put", "live", 5, "open") in rig.puts()


async def test_what_waited_is_dropped_when_the_partition_moved(rig: Rig) -> None:
    live, ended = session("live"), ended_session("done")
    rig.checkpointer.hold({PARTITION})
    rig.checkpointer.due(live)
    await rig.checkpointer.close(ended)
    rig.checkpointer.forget({PARTITION})
    rig.checkpointer.hold({PARTITION + 1})  # wakes nothing of the moved partition
    await _run_briefly(rig.checkpointer, lambda: bool(rig.journal))
    assert rig.journal == []


# -- orphans --------------------------------------------------------------------------------


async def test_an_orphan_quiet_for_the_idle_timeout_is_ended_through_the_publisher(
    rig: Rig,
) -> None:
    """Issue 12: _expire_orphan sent its session_ended without CloudEvents
    headers or traceparent."""
    rig.store.data["orphan"] = orphan()
    await rig.checkpointer.expire(lambda p: None, quiet_for(IDLE_S), nothing_live)
    [(topic, key, value, headers)] = rig.producer.sent
    assert (topic, key) == ("stt.sessions", b"orphan")
    assert value is not None
    event = json.loads(value)
    assert event["type"] == "session_ended"
    assert (event["finals"], event["reconnects"], event["audio_seconds"]) == (5, 2, 2.0)
    names = dict(headers)
    assert names["ce_type"] == b"dev.reson8.kafka.session_ended"
    assert names["ce_id"] == event["event_id"].encode()
    assert event["event_id"] == event_id("orphan", None, 0, "session_ended")  # as its owner's
    for key_ in ("ce_specversion", "ce_source", "ce_time"):
        assert key_ in names
    assert TRACEPARENT.match(names["traceparent"].decode())


async def test_an_ended_orphan_becomes_a_closing_entry_and_is_ended_once(rig: Rig) -> None:
    rig.store.data["orphan"] = orphan()
    await rig.checkpointer.expire(lambda p: None, quiet_for(IDLE_S), nothing_live)
    await rig.checkpointer.expire(lambda p: None, quiet_for(IDLE_S + 5), nothing_live)
    entry = rig.store.get("orphan")
    assert entry is not None
    assert (entry.state, entry.offset) == ("ended", 10)
    assert len(rig.producer.sent) == 1
    await rig.checkpointer.expire(lambda p: 10, quiet_for(IDLE_S + 10), nothing_live)
    assert rig.store.get("orphan") is None


@pytest.mark.parametrize(
    ("quiet", "live"),
    [
        pytest.param(IDLE_S - 1, False, id="not quiet long enough"),
        pytest.param(None, False, id="partition not owned here"),
        pytest.param(IDLE_S * 10, True, id="its session is live here"),
    ],
)
async def test_a_checkpoint_that_is_not_an_orphan_is_left_open(
    rig: Rig, quiet: float | None, live: bool
) -> None:
    rig.store.data["orphan"] = orphan()
    await rig.checkpointer.expire(lambda p: None, quiet_for(quiet), lambda s: live)
    assert rig.producer.sent == []
    entry = rig.store.get("orphan")
    assert entry is not None
    assert entry.state == "open"
