"""Upstream drops: replay and rebasing keep the finals identical to a clean run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from emulator.faults import Faults
from emulator.samples import encode
from emulator.server import EmulatorConfig, EmulatorServer
from emulator.tones import expected_finals, synthesize
from schemas.events import SessionEvent
from tests.e2e.harness import (
    Outputs,
    Stack,
    WorkerProcess,
    produce_sessions,
    session_records,
    spoken,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

# ~14 s of speech in 8 utterances: every connection is dropped several times.
UTTERANCES = spoken(8, stride=3, longest=3)


@pytest.fixture
async def dropping_emulator() -> AsyncIterator[EmulatorServer]:
    config = EmulatorConfig(recognizer="tones", faults=Faults(drop_after_ms=2500))
    async with EmulatorServer(config) as server:
        yield server


@pytest.fixture
def stack_partitions() -> int:
    return 2


@pytest.mark.parametrize("fmt", ["pcm_s16le", "ogg-opus"])
async def test_dropped_connections_lose_and_double_nothing(
    stack: Stack, dropping_emulator: EmulatorServer, tmp_path: Path, fmt: str
) -> None:
    pcm = synthesize(UTTERANCES, pause_ms=700)
    want = expected_finals(UTTERANCES, pause_ms=700)
    if fmt == "pcm_s16le":
        data, headers = pcm, [("stt-encoding", b"pcm_s16le")]
    else:
        data, headers = encode(pcm, 16000, 1, fmt), []
    worker = WorkerProcess(stack, dropping_emulator.url, tmp_path / "worker.log")
    worker.start()
    try:
        await worker.ready()
        async with Outputs(stack) as out:
            records = session_records(data, chunk_bytes=3200, first_headers=headers)
            await produce_sessions(stack, {"drop": records})
            await out.until(out.ended(["drop"]), timeout_s=120)
    finally:
        worker.stop()
    got = out.finals("drop")
    assert [g[0] for g in got] == [w[0] for w in want]
    tolerance = 0 if fmt == "pcm_s16le" else 30
    for (_, gs, gd), (_, ws, wd) in zip(got, want, strict=True):
        assert abs(gs - ws) <= tolerance
        assert abs(gd - wd) <= 2 * tolerance
    # Raw finals (before dedupe by event_id) are not doubled either.
    raw = [e for e in out.events("transcript", "drop") if getattr(e, "is_final", False)]
    assert len(raw) == len(want)
    [ended] = out.events("session_ended", "drop")
    assert isinstance(ended, SessionEvent)
    assert ended.reconnects is not None
    assert ended.reconnects >= 3
    assert len(out.events("upstream_reconnected", "drop")) == ended.reconnects
