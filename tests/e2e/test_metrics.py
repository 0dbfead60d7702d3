"""``/metrics`` moves with traffic: a real worker scraped the way Prometheus
does, before, during and after sessions that transcribe, reconnect (the
emulator drops their connections), fail (a refusal) and send bad records.

Every family of the chart's contract (tests/integration/metrics_contract.py)
is present; each one this traffic drives has moved. ``sessions_resumed`` moves
on a takeover and is checked where takeovers happen (test_rebalance.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from emulator.server import EmulatorServer
from emulator.tones import synthesize
from tests.e2e.harness import (
    Metrics,
    Outputs,
    Stack,
    WorkerProcess,
    produce_records,
    produce_sessions,
    session_records,
    spoken,
)
from tests.integration.metrics_contract import METRICS

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(180)]

UTTERANCES = spoken(6, stride=3, longest=2)
RAW = [("stt-encoding", b"pcm_s16le")]
DROP, REFUSE = "stt-param-emulator_drop_after_ms", "stt-param-emulator_refuse"


def series(family: str) -> str:
    """The series of ``family`` that moves: a histogram's count."""
    return family + "_count" if METRICS[family][0] == "histogram" else family


async def scraped(
    worker: WorkerProcess, done: Callable[[Metrics], bool], timeout_s: float = 30.0
) -> Metrics:
    """Scrape until ``done(metrics)`` holds (the condition, not a fixed wait)."""
    deadline = time.monotonic() + timeout_s
    while True:
        metrics = await worker.metrics()
        if done(metrics):
            return metrics
        assert time.monotonic() < deadline, "the metrics never got there"
        await asyncio.sleep(0.2)


async def test_every_family_moves_with_traffic(
    stack: Stack, emulator: EmulatorServer, tmp_path: Path
) -> None:
    pcm = synthesize(UTTERANCES, pause_ms=600)
    steady = session_records(pcm, chunk_bytes=3200, first_headers=RAW)
    sessions = {
        "steady": steady[:-1],  # its end comes once it was seen live
        # The emulator drops this session's connections every 1.5 s: reconnects.
        "dropped": session_records(pcm, chunk_bytes=3200, first_headers=[*RAW, (DROP, b"1500")]),
        # Refused with 401: a failed session.
        "refused": session_records(
            pcm[:32000], chunk_bytes=3200, first_headers=[*RAW, (REFUSE, b"401")]
        ),
    }
    worker = WorkerProcess(stack, emulator.url, tmp_path / "worker.log")
    worker.start()
    try:
        await worker.ready()
        before = await worker.metrics()
        assert before.value("reson8_worker_ready") == 1
        assert before.value("reson8_sessions_active") == 0
        async with Outputs(stack) as out:
            await produce_sessions(stack, sessions)
            await produce_records(stack, [(b"junk", b"not audio at all", [])])
            await scraped(
                worker, lambda m: m.value("reson8_sessions_active", endpoint="realtime") >= 1
            )
            await produce_sessions(stack, {"steady": steady[-1:]})
            await out.until(out.ended(["steady", "dropped", "refused"]), timeout_s=90)
            after = await scraped(
                worker,
                lambda m: (
                    m.value("reson8_dead_letters_total", code="undecodable_audio") >= 1
                    and m.value("reson8_sessions_active") == 0
                ),
            )
    finally:
        worker.stop()

    takeovers_only = {"reson8_sessions_resumed_total"}
    missing = [f for f in METRICS if not after.has(series(f)) and f not in takeovers_only]
    assert missing == [], missing
    moved: list[tuple[str, dict[str, str]]] = [
        ("reson8_audio_received_seconds_total", {}),
        ("reson8_audio_transcribed_seconds_total", {}),
        ("reson8_records_total", {"outcome": "processed"}),
        ("reson8_records_total", {"outcome": "dead_lettered"}),
        ("reson8_upstream_latency_seconds_count", {}),
        ("reson8_uncovered_audio_held_seconds_count", {}),
        ("reson8_checkpoint_writes_total", {}),
        ("reson8_checkpoint_write_seconds_count", {}),
        ("reson8_event_loop_lag_seconds_count", {}),
        ("reson8_sessions_failed_total", {"code": "UNAUTHORIZED"}),
        ("reson8_upstream_connections_total", {"kind": "reconnect"}),
    ]
    for name, labels in moved:
        assert after.value(name, **labels) > before.value(name, **labels), (name, labels)
    assert after.value("reson8_upstream_connections_total", kind="connect") >= 2
    assert after.value("reson8_rebalances_total") >= 1  # the first assignment
    assert after.value("reson8_rebalance_duration_seconds_count") >= 1
    lag = {
        labels["partition"] for name, labels, _ in after.samples if name == "reson8_consumer_lag"
    }
    assert lag == {f"{stack.audio_topic}:{p}" for p in range(stack.partitions)}
    assert after.value("reson8_uncovered_audio_bound_seconds") > 0
