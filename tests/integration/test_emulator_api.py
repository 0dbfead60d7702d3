"""The emulator as a client written from Reson8's docs sees it: prerecorded,
the ten languages, the new parameters, both refusal styles, and the real
recognizers' decode pool. Plain HTTP (urllib) and plain websockets."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from emulator.samples import encode, speech
from emulator.server import EmulatorConfig, EmulatorServer
from emulator.tones import expected_finals, synthesize

KEY = {"Authorization": "ApiKey test-key"}
PRERECORDED = "/v1/speech-to-text/prerecorded"
UTTERANCES = [["alpha", "bravo"], ["charlie"]]
PCM = synthesize(UTTERANCES)


@asynccontextmanager
async def _server(**config: Any) -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(EmulatorConfig(**config)) as server:
        yield server


def _auth(headers: dict[str, str] | None) -> dict[str, str]:
    return KEY if headers is None else headers


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    """POST as the docs' example does; (status, parsed JSON or raw bytes, headers)."""
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/octet-stream",
            **(KEY if headers is None else headers),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else raw, error.headers


async def _apost(url: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return await asyncio.to_thread(_post, url, body, headers)


# --------------------------------------------------------------------------- prerecorded


@pytest.mark.parametrize("fmt", ["wav", "ogg-opus", "mp3", "flac", "m4a-faststart"])
async def test_prerecorded_container_with_every_flag(fmt: str) -> None:
    query = "include_timestamps=true&include_words=true&include_confidence=true"
    query += "&include_language=true&language=nl&diarize=true&max_speakers=2"
    async with _server() as server:
        url = f"{server.http_url}{PRERECORDED}?{query}"
        status, body, _ = await _apost(url, encode(PCM, 16000, 1, fmt))
    assert status == 200, body
    assert body["text"] == " ".join(" ".join(u) for u in UTTERANCES)
    assert body["language"] == "nl"
    assert body["start_ms"] >= 0
    assert body["duration_ms"] > 0
    assert [w["text"] for w in body["words"]] == [w for u in UTTERANCES for w in u]
    assert all(0 < w["confidence"] <= 1 for w in body["words"])
    assert [s["speaker_id"] for s in body["segments"]] == [0, 0]


async def test_prerecorded_raw_audio_and_plain_answer() -> None:
    async with _server() as server:
        query = "encoding=pcm_s16le&sample_rate=16000&channels=1"
        status, body, _ = await _apost(f"{server.http_url}{PRERECORDED}?{query}", PCM)
        assert server.prerecorded == 1
    assert status == 200
    assert body == {"text": "alpha bravo charlie"}


async def test_a_100_kb_body_is_routed_and_an_oversized_one_gets_413() -> None:
    async with _server(max_body_bytes=200_000) as server:
        url = f"{server.http_url}{PRERECORDED}?encoding=pcm_s16le"
        status, body, _ = await _apost(url, PCM[:100_000])
        assert status == 200, body
        status, body, headers = await _apost(url, b"\0" * 300_000)
    assert status == 413
    assert body["code"] == "PAYLOAD_TOO_LARGE"
    assert headers["X-Error-Message"]


@pytest.mark.parametrize(
    ("path", "query", "body", "headers", "status"),
    [
        (PRERECORDED, "include_interim=true", b"x", KEY, 400),
        (PRERECORDED, "eager_turn_probability=0.3", b"x", KEY, 400),
        (PRERECORDED, "max_speakers=5", b"x", KEY, 400),
        (PRERECORDED, "", b"not audio at all", KEY, 400),
        (PRERECORDED, "", b"x", {}, 401),
        (PRERECORDED, "api_key=k", b"x", KEY, 401),
        ("/v1/speech-to-text/batch", "", b"x", KEY, 404),
    ],
)
async def test_prerecorded_refusals(
    path: str, query: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    async with _server() as server:
        got, answer, _ = await _apost(f"{server.http_url}{path}?{query}", body, headers)
    assert got == status, answer
    assert answer["code"]


# --------------------------------------------------------------------------- handshakes


@pytest.mark.parametrize("language", ["de", "en", "es", "fr", "fy", "it", "nl", "pl", "pt", "sv"])
async def test_every_language_is_accepted(language: str) -> None:
    async with _server() as server:
        url = f"{server.url}/v1/speech-to-text/realtime?encoding=pcm_s16le"
        url += f"&language={language}&include_language=true"
        async with connect(url, additional_headers=KEY) as ws:
            await ws.send(PCM)
            await ws.send(json.dumps({"type": "flush_request", "id": "f"}))
            first = json.loads(await ws.recv())
    assert first["language"] == language


@pytest.mark.parametrize(
    ("endpoint", "query"),
    [
        ("turns", "eager_turn_probability=0.95"),  # above the default final 0.92
        ("turns", "final_turn_probability=1.2"),
        ("realtime", "eager_turn_probability=0.3"),
        ("turns", "max_speakers=2"),
        ("realtime", "max_speakers=0&diarize=true"),
        ("realtime", "filler_mode=tidy"),
        ("realtime", "bias_strength=-1"),
        ("realtime", "phrases=" + ",".join(["w"] * 251)),
        ("realtime", "phrases=a,,b"),
        ("realtime", "language=xx"),
    ],
)
async def test_new_parameters_are_validated(endpoint: str, query: str) -> None:
    async with _server() as server:
        with pytest.raises(InvalidStatus) as info:
            await connect(
                f"{server.url}/v1/speech-to-text/{endpoint}?{query}", additional_headers=KEY
            )
    assert info.value.response.status_code == 400


async def test_documented_and_unknown_parameters_reach_the_session() -> None:
    query = (
        "encoding=pcm_s16le&sample_rate=16000&eager_turn_probability=0.3"
        "&final_turn_probability=0.8&patterns=AMZ[0-9]{6},[0-9]{4,6}&filler_mode=verbatim"
        "&phrases=Reson8,order%20number&bias_strength=2&brand_new_knob=on"
    )
    async with _server() as server:
        async with connect(f"{server.url}/v1/speech-to-text/turns?{query}", additional_headers=KEY):
            await server.wait_until(lambda: len(server.sessions) == 1)
        params = server.sessions[0].params
    assert (params.eager, params.final) == (0.3, 0.8)
    assert params.patterns == ("AMZ[0-9]{6}", "[0-9]{4,6}")
    assert params.phrases == ("Reson8", "order number")
    assert params.extra_params == {"brand_new_knob": "on"}


@pytest.mark.parametrize("status", [401, 402, 429])
async def test_bare_refusals_have_an_empty_body_and_a_message(status: int) -> None:
    async with _server(refusal_style="bare") as server:
        with pytest.raises(InvalidStatus) as info:
            await connect(
                f"{server.url}/v1/speech-to-text/realtime?emulator_refuse={status}",
                additional_headers=KEY,
            )
        _, body, _ = await _apost(f"{server.http_url}{PRERECORDED}", b"x", {})
    response = info.value.response
    assert response.status_code == status
    assert response.body == b""
    assert response.headers["X-Error-Message"]
    assert body["code"] == "unauthorized"  # lower_snake on plain HTTP


# --------------------------------------------------------------------------- turns


async def _turn_events(server: EmulatorServer, query: str, pcm: bytes) -> list[tuple[float, str]]:
    """Send ``pcm`` paced in real time; (arrival s, type) of every turn event."""
    url = f"{server.url}/v1/speech-to-text/turns?encoding=pcm_s16le&{query}"
    events: list[tuple[float, str]] = []
    started = time.monotonic()

    async def read(ws: Any) -> None:
        async for frame in ws:
            kind = json.loads(frame)["type"]
            if kind == "flush_confirmation":
                return
            events.append((time.monotonic() - started, kind))

    async with connect(url, additional_headers=KEY) as ws:
        reader = asyncio.create_task(read(ws))
        for offset in range(0, len(pcm), 3200):  # 100 ms chunks, as the vendor's clients
            await ws.send(pcm[offset : offset + 3200])
            await asyncio.sleep(max(0.0, started + (offset + 3200) / 32000 - time.monotonic()))
        await ws.send(json.dumps({"type": "flush_request"}))
        await reader
    return events


async def test_candidates_lead_turn_end_by_the_probability_margin() -> None:
    pcm = synthesize([["alpha", "bravo"]]) + b"\0" * 32 * 1500  # 1.5 s of silence after
    async with _server() as server:
        events = await _turn_events(server, "", pcm)
    kinds = [kind for _, kind in events]
    assert kinds == ["turn_start", "turn_end_candidate", "turn_end"]
    lead = events[2][0] - events[1][0]
    assert 0.3 <= lead <= 0.7, lead  # 931 - 473 ms of audio, paced in real time


async def test_newest_turn_variant_repeats_candidates_without_continuations() -> None:
    pcm = synthesize([["alpha"], ["bravo"]], pause_ms=600) + synthesize(
        [["charlie"]], pause_ms=1500
    )
    async with _server(turn_continuation=False, repeat_candidates=True) as server:
        events = await _turn_events(server, "", pcm)
    kinds = [kind for _, kind in events]
    assert "turn_continuation" not in kinds
    assert kinds.count("turn_end_candidate") >= 3
    assert kinds[-3:] == ["turn_end_candidate", "turn_end_candidate", "turn_end"]


# --------------------------------------------------------------------------- real recognizers


@pytest.mark.slow
async def test_whisper_over_the_pool_keeps_the_loop_free() -> None:
    """Four live streams at once: finals arrive while the loop answers at once."""
    pcm = b"\0" * 9600 + speech("Please call me back tomorrow morning.") + b"\0" * 25600
    async with _server(recognizer="whisper", decode_workers=2) as server:
        url = f"{server.url}/v1/speech-to-text/realtime?encoding=pcm_s16le&include_interim=true"

        async def one() -> list[dict[str, Any]]:
            async with connect(url, additional_headers=KEY) as ws:
                for offset in range(0, len(pcm), 3200):
                    await ws.send(pcm[offset : offset + 3200])
                    await asyncio.sleep(0.1)
                await ws.send(json.dumps({"type": "flush_request", "id": "x"}))
                frames = []
                async for frame in ws:
                    frames.append(json.loads(frame))
                    if frames[-1]["type"] == "flush_confirmation":
                        return frames
            return frames

        results = await asyncio.gather(*(one() for _ in range(4)))
        assert server.pool is not None
        assert server.pool.jobs_run >= 4
    for frames in results:
        finals = [f for f in frames if f["type"] == "transcript" and f["is_final"]]
        assert "tomorrow morning" in " ".join(f["text"] for f in finals).lower()
        assert frames[-1] == {"type": "flush_confirmation", "id": "x"}


async def test_expected_finals_still_exact_with_tones() -> None:
    async with _server() as server:
        url = f"{server.url}{PRERECORDED}?encoding=pcm_s16le&include_timestamps=true"
        status, body, _ = await _apost(url.replace("ws://", "http://"), PCM)
    assert status == 200
    first = expected_finals(UTTERANCES)[0]
    assert body["start_ms"] == first[1]
