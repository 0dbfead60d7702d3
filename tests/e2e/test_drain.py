"""SIGTERM drains: flush, wait for finals, ack and commit, exit 0, lose nothing."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from emulator.server import EmulatorServer
from emulator.tones import expected_finals, synthesize
from tests.e2e.harness import (
    Outputs,
    Stack,
    WorkerProcess,
    committed_offsets,
    produce_sessions,
    session_records,
)
from topology.connection import KafkaSettings

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(180)]

UTTERANCES = [["alpha", "bravo"], ["charlie"], ["delta", "echo", "foxtrot"]]


async def test_sigterm_flushes_waits_commits_and_exits_cleanly(
    kafka_settings: KafkaSettings, topic_prefix: str, emulator: EmulatorServer, tmp_path: Path
) -> None:
    stack = Stack(kafka_settings, topic_prefix, partitions=1)
    await stack.create_topics()
    # No idle flush: only the drain can cover the trailing silence of the
    # still-open session, so the committed offset shows the drain did its job.
    worker = WorkerProcess(
        stack,
        emulator.url,
        tmp_path / "worker.log",
        env_extra={"RESON8_KAFKA_IDLE_FLUSH_S": "600", "RESON8_KAFKA_DRAIN_TIMEOUT_S": "15"},
    )
    worker.start()
    want = expected_finals(UTTERANCES)
    records = session_records(
        synthesize(UTTERANCES),
        chunk_bytes=3200,
        first_headers=[("stt-encoding", b"pcm_s16le")],
        end=False,
    )
    try:
        await worker.ready()
        async with Outputs(stack) as out:
            await produce_sessions(stack, {"open-call": records})
            await out.until(lambda _: len(out.finals("open-call")) == len(want))
            assert await committed_offsets(stack, stack.prefix + "worker") != {0: len(records)}
            started = time.monotonic()
            worker.signal(signal.SIGTERM)
            assert await worker.wait(timeout_s=60) == 0, worker.log_tail()
            drain_s = time.monotonic() - started
    finally:
        worker.stop()
    assert await committed_offsets(stack, stack.prefix + "worker") == {0: len(records)}
    assert [f[0] for f in out.finals("open-call")] == [w[0] for w in want]
    assert drain_s < 15 + 10
