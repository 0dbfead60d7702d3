"""Every documented Reson8 parameter reaches the upstream from a producer
header, through Kafka and a real worker, as the emulator parses it from the
handshake (issue 14): the documented ``stt-<name>`` headers, the flags of
``stt-options`` and the ``stt-param-<name>`` pass-through of parameters this
version does not know. The worker also names itself (``X-Reson8-Integration``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from emulator.server import EmulatorConfig, EmulatorServer
from emulator.tones import synthesize
from schemas.wire import StreamParams
from tests.e2e.harness import Outputs, Stack, WorkerProcess, produce_sessions, session_records

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(180)]

MODEL = "acme-orders-v2"
TURNS = [
    ("stt-endpoint", b"turns"),
    ("stt-encoding", b"pcm_s16le"),
    ("stt-sample-rate", b"16000"),
    ("stt-language", b"nl"),
    ("stt-custom-model-id", MODEL.encode()),
    ("stt-eager-turn-probability", b"0.3"),
    ("stt-final-turn-probability", b"0.8"),
    ("stt-patterns", b"AMZ[0-9]{6},[0-9]{4,6}"),
    ("stt-filler-mode", b"verbatim"),
    ("stt-phrases", b"Reson8,order number"),
    ("stt-bias-strength", b"2"),
    ("stt-options", b"include_words,include_timestamps,include_language"),
    ("stt-param-brand_new_knob", b"on"),
]
REALTIME = [
    ("stt-encoding", b"pcm_s16le"),
    ("stt-sample-rate", b"16000"),
    ("stt-language", b"en"),
    ("stt-options", b"diarize,include_confidence,include_words,include_timestamps"),
    ("stt-max-speakers", b"2"),
    ("stt-patterns", b"[0-9]{4}"),
    ("stt-filler-mode", b"clean"),
    ("stt-phrases", b"alpha"),
    ("stt-bias-strength", b"0.5"),
    ("stt-param-future_flag", b"true"),
]


@pytest.fixture
async def checking_emulator() -> AsyncIterator[EmulatorServer]:
    """The emulator validating every parameter as the service does, knowing one custom model."""
    config = EmulatorConfig(recognizer="tones", custom_models=(MODEL,))
    async with EmulatorServer(config) as server:
        yield server


def by_endpoint(server: EmulatorServer, endpoint: str) -> StreamParams:
    [params] = [s.params for s in server.sessions if s.params.endpoint == endpoint]
    return params


async def test_every_documented_parameter_reaches_the_upstream(
    stack: Stack, checking_emulator: EmulatorServer, tmp_path: Path
) -> None:
    audio = synthesize([["alpha"], ["bravo"]])
    sessions = {
        "turns-call": session_records(audio, chunk_bytes=3200, first_headers=TURNS),
        "realtime-call": session_records(audio, chunk_bytes=3200, first_headers=REALTIME),
    }
    worker = WorkerProcess(stack, checking_emulator.url, tmp_path / "worker.log")
    worker.start()
    try:
        await worker.ready()
        async with Outputs(stack) as out:
            await produce_sessions(stack, sessions)
            await out.until(out.ended(sessions), timeout_s=60)
    finally:
        worker.stop()
    assert out.events("session_failed") == []
    assert out.events("transcript", "realtime-call")
    assert out.events("turn_end", "turns-call")

    turns = by_endpoint(checking_emulator, "turns")
    assert (turns.encoding, turns.sample_rate, turns.language) == ("pcm_s16le", 16000, ("nl",))
    assert turns.custom_model_id == MODEL
    assert (turns.eager_turn_probability, turns.final_turn_probability) == (0.3, 0.8)
    assert turns.patterns == ("AMZ[0-9]{6}", "[0-9]{4,6}")
    assert turns.filler_mode == "verbatim"
    assert turns.phrases == ("Reson8", "order number")
    assert turns.bias_strength == 2.0
    assert (turns.include_words, turns.include_timestamps, turns.include_language) == (
        True,
        True,
        True,
    )
    assert turns.extra == (("brand_new_knob", "on"),)

    realtime = by_endpoint(checking_emulator, "realtime")
    assert realtime.language == ("en",)
    assert (realtime.diarize, realtime.max_speakers, realtime.include_confidence) == (True, 2, True)
    assert (realtime.include_words, realtime.include_timestamps) == (True, True)
    assert realtime.patterns == ("[0-9]{4}",)
    assert (realtime.filler_mode, realtime.phrases, realtime.bias_strength) == (
        "clean",
        ("alpha",),
        0.5,
    )
    assert realtime.extra == (("future_flag", "true"),)
    integration = {s.integration for s in checking_emulator.sessions}
    assert len(integration) == 1
    [name] = integration
    assert name is not None
    assert name.startswith("reson8-kafka:")
