"""The API key never leaves the worker: no log line at any level, no event,
no dead letter (issue 12; the websockets client used to log
``Authorization: ApiKey <key>`` at DEBUG)."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator.server import EmulatorServer
from emulator.tones import synthesize
from tests.e2e.harness import (
    Outputs,
    Stack,
    WorkerProcess,
    dlq_records,
    produce_sessions,
    session_records,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(180)]

KEY = "sk-live-7f3c9a1e5d2b4f6a8c0e"


async def test_the_key_is_in_no_log_line_event_or_dead_letter(
    stack: Stack, emulator: EmulatorServer, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    worker = WorkerProcess(
        stack,
        emulator.url,
        log,
        env_extra={"RESON8_API_KEY": KEY, "RESON8_KAFKA_LOG_LEVEL": "debug"},
    )
    raw = [("stt-encoding", b"pcm_s16le")]
    sessions = {
        "fine": session_records(synthesize([["alpha"]]), chunk_bytes=3200, first_headers=raw),
        # The emulator refuses this one connection with 401 (a pass-through parameter).
        "refused": session_records(
            synthesize([["bravo"]]),
            chunk_bytes=3200,
            first_headers=[*raw, ("stt-param-emulator_refuse", b"401")],
        ),
    }
    worker.start()
    try:
        await worker.ready()
        async with Outputs(stack) as out:
            refused_end = sessions["refused"].pop()
            await produce_sessions(stack, sessions)
            await out.until(lambda _: bool(out.events("session_failed", "refused")))
            # A record of a session that has failed is dead-lettered.
            await produce_sessions(stack, {"refused": [refused_end]})
            await out.until(out.ended(sessions))
            dead = await dlq_records(stack, 1)
    finally:
        worker.stop()
    [failed] = out.events("session_failed", "refused")
    assert getattr(failed, "code", "") == "UNAUTHORIZED"
    assert out.finals("fine")
    text = log.read_text(errors="replace")
    assert "Authorization: ApiKey ***" in text  # DEBUG really logged the request headers
    assert KEY not in text
    for received in out.received:
        assert KEY not in received.event.model_dump_json()
        assert all(KEY.encode() not in value for value in received.headers.values())
    for record in dead:
        assert KEY.encode() not in (record.value or b"")
        assert all(KEY.encode() not in value for _, value in record.headers)
