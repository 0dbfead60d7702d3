"""The worker's Faust transport: runs of records per event, and the commits
they allow (workers/transport.py).

A real ``workers.transport.Consumer`` of an app built without a broker; no
thread and no connection is started. What a commit may say is what users
rely on: never past a record that is not done, offset 0 like any other, an
earlier assignment's late acks never committed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.serializers import codecs
from faust.types import TP
from faust.types.tuples import Message

from workers.app import WorkerApp
from workers.settings import Settings
from workers.transport import RUN_CODEC, Consumer, Run

TOPIC = "stt.audio"
TP0 = TP(TOPIC, 0)


@pytest.fixture
async def consumer(tmp_path: Path) -> AsyncIterator[Consumer]:
    settings = Settings(api_key="k", bootstrap_servers="127.0.0.1:9")  # nothing listens
    worker = WorkerApp(settings, datadir=tmp_path)
    consumer = worker.app.consumer
    assert isinstance(consumer, Consumer)
    consumer._owned = {TP0}  # the current assignment
    yield consumer
    worker.telemetry.shutdown()


def records(*offsets: int) -> list[Any]:
    return [SimpleNamespace(offset=o, key=b"s", value=b"\x00\x00", headers=[]) for o in offsets]


def run_event(tp: TP, *offsets: int) -> Message:
    """The event of a run, as the consumer makes it: Faust's message at the
    run's last offset, whose value is the run."""
    message = Message(
        topic=tp.topic,
        partition=tp.partition,
        offset=offsets[-1],
        timestamp=0.0,
        timestamp_type=0,
        headers=[],
        key=b"s",
        value=None,
        checksum=None,
        tp=tp,
    )
    message.value = Run(records(*offsets))  # type: ignore[assignment]
    return message


def test_a_run_from_offset_0_commits_the_offset_after_its_last_record(consumer: Consumer) -> None:
    assert consumer._new_offset(TP0) is None  # nothing done: nothing to commit
    assert consumer.ack(run_event(TP0, 0, 1, 2))
    assert consumer._new_offset(TP0) == 3
    assert consumer._n_acked == 3  # records, not events


def test_holes_in_the_log_do_not_hold_the_commit_back(consumer: Consumer) -> None:
    assert consumer.ack(run_event(TP0, 0, 1))
    assert consumer.ack(run_event(TP0, 5, 9))  # 2-4 and 6-8 compacted away
    assert consumer._new_offset(TP0) == 10


def test_a_late_ack_of_an_older_run_never_moves_the_commit_back(consumer: Consumer) -> None:
    older, newer = run_event(TP0, 0, 1, 2), run_event(TP0, 3, 4)
    assert consumer.ack(newer)
    assert consumer.ack(older)
    assert consumer._new_offset(TP0) == 5


def test_a_run_is_acked_once(consumer: Consumer) -> None:
    event = run_event(TP0, 7, 8)
    assert consumer.ack(event)
    assert not consumer.ack(event)
    assert consumer._n_acked == 2


def test_acks_of_an_earlier_assignment_are_not_committed(consumer: Consumer) -> None:
    """A partition that moved away (or came back after a rebalance) must not
    commit what a run of its earlier assignment says: the new owner may be
    reading it from the committed offset."""
    elsewhere = TP(TOPIC, 1)
    assert not consumer.ack(run_event(elsewhere, 0, 1))
    assert consumer._new_offset(elsewhere) is None


async def test_a_revoked_partition_forgets_its_runs(consumer: Consumer) -> None:
    assert consumer.ack(run_event(TP0, 0, 1))
    await consumer.on_partitions_revoked({TP0})
    assert not consumer.ack(run_event(TP0, 2, 3))
    assert TP0 not in consumer._run_acked


def test_only_records_past_the_read_offset_are_delivered(consumer: Consumer) -> None:
    batch = records(3, 4, 5, 6)
    assert [r.offset for r in consumer._unread(TP0, batch)] == [3, 4, 5, 6]  # nothing read
    consumer._read_offset[TP0] = 5  # a seek to the committed offset, or the last run's end
    assert [r.offset for r in consumer._unread(TP0, batch)] == [5, 6]


def test_a_released_run_keeps_its_count_and_drops_its_bytes() -> None:
    run = Run(records(0, 1, 2))
    run.release()
    assert (run.count, list(run.records)) == (3, [])


def test_runs_pass_the_value_codec_untouched_and_are_never_produced() -> None:
    run = Run(records(0))
    codec = codecs.get_codec(RUN_CODEC)
    assert codec.loads(run) is run  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        codec.dumps(run)  # type: ignore[arg-type]
