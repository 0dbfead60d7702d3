"""Takeover after a crash: a worker killed (SIGKILL) mid-stream loses no final
and keeps timestamps and event ids continuous, at the chart's group timing.

The test compares against the same input transcribed without faults (the
deterministic recognizer's expected finals). Session ids are chosen so that
every partition carries a session of every format: whichever worker owns what,
the takeover hits PCM, WAV and OGG/Opus sessions mid-stream.

The workers run with the chart's defaults (session timeout 10 s, heartbeat
1 s, checkpoints gathered over 1 s): the killed worker's partitions move once
the broker has missed its heartbeats for the session timeout, and the time
from SIGKILL to the new owner's first output is measured against that bound.
Rebalances of live workers (join, leave, static membership) are in
test_rebalance.py.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from emulator.samples import encode
from emulator.server import EmulatorServer
from emulator.tones import expected_finals, synthesize
from schemas.events import SessionEvent
from tests.e2e.harness import (
    Chunk,
    Outputs,
    Stack,
    WorkerProcess,
    keys_on_partitions,
    produce_live,
    session_records,
    spoken,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

PARTITIONS = 4
# 23 s of speech: the takeover happens while the calls are still live.
UTTERANCES = spoken(24, stride=5, longest=2)
PAUSE_MS = 600
CHUNK_S = 0.1
SESSION_TIMEOUT_S = 10.0  # helm/reson8-kafka/values.yaml, config.sessionTimeoutSeconds


@pytest.fixture
def stack_partitions() -> int:
    return PARTITIONS


def calls() -> tuple[dict[str, list[Chunk]], dict[str, int]]:
    """One session per (format, partition); returns the records and each
    session's timing tolerance in ms."""
    pcm = synthesize(UTTERANCES, pause_ms=PAUSE_MS)
    ogg = encode(pcm, 16000, 1, "ogg-opus")
    sessions: dict[str, list[Chunk]] = {}
    tolerance: dict[str, int] = {}
    formats = {
        # Lossless: within the recognizer's 10 ms grid, which a replay that
        # starts off-grid (at a flush point) shifts; Opus: codec delay too.
        "pcm": (pcm, [("stt-encoding", b"pcm_s16le")], 3200, 10),
        "wav": (encode(pcm, 16000, 1, "wav"), [], 3200, 10),
        "ogg": (ogg, [], -(-len(ogg) * 3200 // len(pcm)), 30),  # paced like the PCM
    }
    for name, (data, headers, chunk, tol) in formats.items():
        for sid in keys_on_partitions(name, PARTITIONS):
            sessions[sid] = session_records(data, chunk_bytes=chunk, first_headers=headers)
            tolerance[sid] = tol
    return sessions, tolerance


def check_finals(out: Outputs, tolerance: dict[str, int]) -> Counter[str]:
    """Every session's deduplicated finals equal the no-fault run; returns the
    raw duplicate count per session (finals re-emitted with the same event_id)."""
    want = expected_finals(UTTERANCES, pause_ms=PAUSE_MS)
    duplicates: Counter[str] = Counter()
    for sid, tol in tolerance.items():
        got = out.finals(sid)
        extra = [g for g in got if g not in want]
        assert [g[0] for g in got] == [w[0] for w in want], (sid, extra, len(got), len(want))
        for (_, gs, gd), (_, ws, wd) in zip(got, want, strict=True):
            assert abs(gs - ws) <= tol, (sid, gs, ws)
            assert abs(gd - wd) <= 2 * tol, (sid, gd, wd)
        raw = [e for e in out.events("transcript", sid) if getattr(e, "is_final", False)]
        duplicates[sid] = len(raw) - len(got)
    return duplicates


def takeovers(out: Outputs) -> list[SessionEvent]:
    return [
        e
        for e in out.events("upstream_reconnected")
        if isinstance(e, SessionEvent) and e.reason == "takeover"
    ]


async def test_sigkill_mid_stream_the_other_worker_resumes_every_session(
    stack: Stack, emulator: EmulatorServer, tmp_path: Path
) -> None:
    sessions, tolerance = calls()
    workers = [WorkerProcess(stack, emulator.url, tmp_path / f"worker-{i}.log") for i in range(2)]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            await worker.ready()
        async with Outputs(stack) as out:
            producing = asyncio.create_task(produce_live(stack, sessions, chunk_s=CHUNK_S))
            # Kill mid-stream, once every session has finals out and a
            # checkpoint (written within the 1 s gathering window of a final).
            await out.until(lambda _: all(len(out.finals(s)) >= 4 for s in sessions), 60)
            assert not producing.done()
            killed_at = time.time()
            workers[0].signal(signal.SIGKILL)
            await producing
            await out.until(out.ended(sessions), timeout_s=150)
    finally:
        for worker in workers:
            worker.stop()
    duplicates = check_finals(out, tolerance)
    moved = takeovers(out)
    assert moved, "the killed worker owned no session mid-stream"
    assert {e.session_id.split("-")[0] for e in moved} == {"pcm", "wav", "ogg"}
    resumed_in = min(r.produced for r in out.received if r.event in moved) - killed_at
    # The broker notices after the session timeout, then a rebalance, a
    # checkpoint load and a reconnect.
    assert resumed_in < SESSION_TIMEOUT_S + 5, resumed_in
    for sid in sessions:
        [ended] = out.events("session_ended", sid)
        assert isinstance(ended, SessionEvent)
        assert ended.finals == len(expected_finals(UTTERANCES, pause_ms=PAUSE_MS)), sid
    print(
        f"\nSIGKILL takeover (session timeout {SESSION_TIMEOUT_S:.0f} s, heartbeat 1 s): "
        f"{len(moved)} streams resumed, first output {resumed_in:.1f} s after the kill; "
        f"finals lost 0; raw duplicates {sum(duplicates.values())} "
        f"over {len(sessions)} sessions {dict(duplicates)}"
    )
