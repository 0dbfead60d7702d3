"""The emulator on loopback, driven by a real websockets client."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from emulator.faults import Faults
from emulator.samples import SPEECH_VOICE, SPEECH_WPM, encode
from emulator.server import EmulatorConfig, EmulatorServer
from emulator.tones import expected_finals, synthesize

REALTIME = "/v1/speech-to-text/realtime"
TURNS = "/v1/speech-to-text/turns"
KEY = {"Authorization": "ApiKey test-key"}
UTTERANCES = [["alpha", "bravo"], ["charlie"], ["delta", "echo", "foxtrot"]]
PCM = synthesize(UTTERANCES)
FINALS = expected_finals(UTTERANCES)
TEXTS = [text for text, _, _ in FINALS]


@asynccontextmanager
async def emulator(**options: Any) -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(EmulatorConfig(**options)) as server:
        yield server


def _url(server: EmulatorServer, path: str, **query: str) -> str:
    tail = "&".join(f"{k}={v}" for k, v in query.items())
    return f"{server.url}{path}" + (f"?{tail}" if tail else "")


async def _send_all(ws: ClientConnection, chunks: Sequence[bytes]) -> None:
    for chunk in chunks:
        await ws.send(chunk)


async def _until_confirmed(ws: ClientConnection, request_id: str | None) -> list[dict[str, Any]]:
    """Flush, then read every message up to and including the confirmation."""
    await ws.send(json.dumps({"type": "flush_request", "id": request_id}))
    messages: list[dict[str, Any]] = []
    while True:
        message = json.loads(await ws.recv())
        messages.append(message)
        if message["type"] == "flush_confirmation":
            return messages


async def _stream(
    server: EmulatorServer, audio: Sequence[bytes], path: str = REALTIME, **query: str
) -> list[dict[str, Any]]:
    async with connect(_url(server, path, **query), additional_headers=KEY) as ws:
        sender = asyncio.create_task(_send_all(ws, audio))
        await sender
        return await _until_confirmed(ws, "done")


async def _collect(ws: ClientConnection, into: list[dict[str, Any]]) -> None:
    """Append every message to ``into`` until the connection closes (raises)."""
    while True:
        into.append(json.loads(await ws.recv()))


def _finals(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == "transcript" and m.get("is_final", True)]


def _split(data: bytes, seed: int, largest: int) -> list[bytes]:
    rng = random.Random(seed)
    chunks, position = [], 0
    while position < len(data):
        size = rng.randint(1, largest)
        chunks.append(data[position : position + size])
        position += size
    return chunks


async def _refusal(url: str, **kwargs: Any) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, **kwargs):
            pass
    return info.value


def _body(refusal: InvalidStatus) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(bytes(refusal.response.body))
    return data


async def _post_token(server: EmulatorServer, authorization: str | None) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = "POST /v1/auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
    if authorization:
        head += f"Authorization: {authorization}\r\n"
    writer.write((head + "\r\n").encode())
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


# --------------------------------------------------------------------------- realtime


async def test_realtime_all_fields_over_the_wire() -> None:
    async with emulator() as server:
        messages = await _stream(
            server,
            [PCM],
            encoding="pcm_s16le",
            include_interim="true",
            include_timestamps="true",
            include_words="true",
            include_confidence="true",
            include_language="true",
            diarize="true",
        )
    finals = _finals(messages)
    assert [(m["text"], m["start_ms"], m["duration_ms"]) for m in finals] == FINALS
    assert all(m["is_final"] is True and m["speaker_id"] == 0 for m in finals)
    assert any(m["is_final"] is False for m in messages if m["type"] == "transcript")
    assert finals[0]["words"][1] == {
        "text": "bravo",
        "start_ms": 500,
        "duration_ms": 200,
        "confidence": finals[0]["words"][1]["confidence"],
    }
    assert messages[-1] == {"type": "flush_confirmation", "id": "done"}


FORMATS = ["wav", "wav-stream", "ogg-opus", "flac", "webm-opus", "mp3", "m4a-aac"]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_every_container_format_with_auto(fmt: str) -> None:
    # Container decoders hold back a tail until more bytes arrive (FLAC: about a
    # second), and a flush_request does not end the stream: pad with silence.
    padded = PCM + bytes(2 * 32000)
    stereo = b"".join(padded[i : i + 2] * 2 for i in range(0, len(padded), 2))
    audio = encode(stereo, 16000, 2, fmt)
    async with emulator() as server:
        messages = await _stream(server, _split(audio, 1, 4000), include_timestamps="true")
    finals = _finals(messages)
    assert [m["text"] for m in finals] == TEXTS
    for message, (_, start, _) in zip(finals, FINALS, strict=True):
        assert abs(message["start_ms"] - start) <= 60  # codec delay/padding


@pytest.mark.parametrize(
    ("fmt", "rate", "channels"),
    [("pcm_s16le", 16000, 1), ("pcm_s16le", 44100, 2), ("mulaw", 8000, 1), ("alaw", 8000, 3)],
)
async def test_raw_encodings_are_resampled_and_downmixed(
    fmt: str, rate: int, channels: int
) -> None:
    source = synthesize(UTTERANCES, sample_rate=rate)
    interleaved = b"".join(source[i : i + 2] * channels for i in range(0, len(source), 2))
    audio = encode(interleaved, rate, channels, fmt)
    async with emulator() as server:
        messages = await _stream(
            server,
            _split(audio, 2, 3001),
            encoding=fmt,
            sample_rate=str(rate),
            channels=str(channels),
            include_timestamps="true",
        )
    got = [(m["text"], m["start_ms"], m["duration_ms"]) for m in _finals(messages)]
    assert [g[0] for g in got] == TEXTS
    for (_, start, duration), (_, want_start, want_duration) in zip(got, FINALS, strict=True):
        assert abs(start - want_start) <= 10
        assert abs(duration - want_duration) <= 20


async def test_arbitrary_byte_splits_give_identical_finals() -> None:
    wav = encode(PCM, 16000, 1, "wav")
    query = {"include_timestamps": "true", "include_words": "true"}
    async with emulator() as server:
        whole = _finals(await _stream(server, [wav], **query))
        for seed, largest in ((3, 7), (4, 777), (5, 20000)):
            assert _finals(await _stream(server, _split(wav, seed, largest), **query)) == whole
    assert [m["text"] for m in whole] == TEXTS


async def test_audio_split_across_two_connections_gives_the_same_finals_rebased() -> None:
    first_end = FINALS[0][1] + FINALS[0][2]
    boundary_ms = first_end + 400  # inside the pause, on the 10 ms grid
    cut = boundary_ms * 32
    query = {"encoding": "pcm_s16le", "include_timestamps": "true"}
    async with emulator() as server:
        one = _finals(await _stream(server, [PCM[:cut]], **query))
        two = _finals(await _stream(server, [PCM[cut:]], **query))
        reference = _finals(await _stream(server, [PCM], **query))
    rebased = [{**m, "start_ms": m["start_ms"] + boundary_ms} for m in two]
    assert one + rebased == reference


async def test_flush_ids_and_null() -> None:
    async with emulator() as server, connect(_url(server, REALTIME), additional_headers=KEY) as ws:
        assert await _until_confirmed(ws, "a-1") == [{"type": "flush_confirmation", "id": "a-1"}]
        await ws.send(json.dumps({"type": "flush_request"}))
        assert json.loads(await ws.recv()) == {"type": "flush_confirmation", "id": None}


@pytest.mark.slow
async def test_pocketsphinx_recognizes_espeak_speech() -> None:
    # The voice the model understands best (emulator.samples.SPEECH_VOICE); the
    # default British voice defeats the US English model. The --stdout WAV
    # (22.05 kHz, sizes unknown) goes in as-is: encoding=auto, resampled by the
    # emulator. espeak-ng is installed by scripts/system-deps.sh: fail if absent.
    espeak = shutil.which("espeak-ng")
    assert espeak is not None, "espeak-ng is not installed (bash scripts/system-deps.sh)"
    digits = "one two three four five six seven eight nine ten"
    process = await asyncio.create_subprocess_exec(
        espeak,
        "--stdout",
        "-v",
        SPEECH_VOICE,
        "-s",
        str(SPEECH_WPM),
        digits,
        stdout=asyncio.subprocess.PIPE,
    )
    wav, _ = await process.communicate()
    async with emulator(recognizer="pocketsphinx") as server:
        messages = await _stream(server, _split(wav + bytes(32000), 6, 8000))
    heard = set(" ".join(m["text"] for m in _finals(messages)).split())
    assert len(heard & set(digits.split())) >= 4, heard


# --------------------------------------------------------------------------- turns


async def test_turns_over_the_wire() -> None:
    audio = synthesize(UTTERANCES[:2], pause_ms=1000) + synthesize([["golf"]], pause_ms=400)
    async with emulator() as server:
        messages = await _stream(server, [audio], TURNS, encoding="pcm_s16le")
    assert [m["type"] for m in messages] == [
        "turn_start",
        "turn_end_candidate",
        "turn_end",
        "turn_start",
        "turn_end_candidate",
        "turn_end",
        "turn_start",
        "turn_end_candidate",  # eager reached (500 ms) during the 600 ms of tail
        "turn_end",  # the flush commits it
        "flush_confirmation",
    ]
    assert [m["text"] for m in messages if m["type"] == "turn_end_candidate"] == [
        "alpha bravo",
        "charlie",
        "golf",
    ]


# --------------------------------------------------------------------------- handshake


async def test_unknown_path_and_bad_parameters() -> None:
    async with emulator() as server:
        missing = await _refusal(server.url + "/v1/speech-to-text/batch", additional_headers=KEY)
        assert missing.response.status_code == 404
        assert _body(missing)["code"] == "NOT_FOUND"
        bad = await _refusal(_url(server, TURNS, include_interim="true"), additional_headers=KEY)
        assert bad.response.status_code == 400
        assert _body(bad)["code"] == "INVALID_REQUEST"
        assert "include_interim" in bad.response.headers["X-Error-Message"]
        lang = await _refusal(_url(server, REALTIME, language="xx"), additional_headers=KEY)
        assert "language" in _body(lang)["detail"]
        assert server.refused == [404, 400, 400]
        assert server.accepted == 0


async def test_api_keys_and_query_credentials() -> None:
    async with emulator(api_keys=("right",)) as server:
        wrong = await _refusal(
            _url(server, REALTIME), additional_headers={"Authorization": "ApiKey no"}
        )
        assert wrong.response.status_code == 401
        assert _body(wrong) == {"code": "UNAUTHORIZED", "detail": "invalid API key"}
        in_query = await _refusal(_url(server, REALTIME, api_key="right"))
        assert in_query.response.status_code == 401
        assert "right" not in in_query.response.headers["X-Error-Message"]
        async with connect(
            _url(server, REALTIME), additional_headers={"Authorization": "ApiKey right"}
        ):
            pass


async def test_token_endpoint_bearer_and_expiry() -> None:
    now = [0.0]
    async with emulator(api_keys=("k",), token_ttl_s=30, clock=lambda: now[0]) as server:
        assert (await _post_token(server, "ApiKey nope"))[0] == 401
        status, body = await _post_token(server, "ApiKey k")
        assert status == 200
        token = json.loads(body)
        assert token["token_type"] == "Bearer"
        assert token["expires_in"] == 30
        bearer = {"Authorization": f"Bearer {token['access_token']}"}
        async with connect(_url(server, REALTIME), additional_headers=bearer) as ws:
            assert (await _until_confirmed(ws, None))[-1]["id"] is None
        now[0] = 30.0
        expired = await _refusal(_url(server, REALTIME), additional_headers=bearer)
        assert expired.response.status_code == 401
        assert "expired" in _body(expired)["detail"]


async def test_subprotocol_bearer_answers_bearer_without_the_token() -> None:
    async with emulator() as server:
        _, body = await _post_token(server, "ApiKey any")
        token = json.loads(body)["access_token"]
        async with connect(_url(server, TURNS), subprotocols=["bearer", token]) as ws:
            assert ws.subprotocol == "bearer"
            assert ws.response is not None
            assert token not in str(ws.response.headers)


async def test_post_to_an_unknown_path_is_404_json() -> None:
    async with emulator() as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /v2/other HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        response = await reader.read()
        writer.close()
        await writer.wait_closed()
    assert response.startswith(b"HTTP/1.1 404 ")
    assert response.endswith(b'{"code":"NOT_FOUND","detail":"no such resource: /v2/other"}')


async def test_session_limit_429_then_free_again() -> None:
    async with emulator(max_sessions=1) as server:
        async with connect(_url(server, REALTIME), additional_headers=KEY):
            busy = await _refusal(_url(server, TURNS), additional_headers=KEY)
            assert busy.response.status_code == 429
            assert _body(busy)["code"] == "TOO_MANY_REQUESTS"
        await server.wait_until(lambda: server.active_sessions == 0)
        async with connect(_url(server, TURNS), additional_headers=KEY):
            assert server.active_sessions == 1


async def test_server_pings_and_closes_a_silent_client() -> None:
    async with emulator(ping_interval=0.1, ping_timeout=0.2, close_timeout=0.2) as server:
        async with connect(
            _url(server, REALTIME), additional_headers=KEY, ping_interval=None
        ) as ws:
            ws.transport.pause_reading()  # the client stops answering pings
            await server.wait_until(lambda: bool(server.sessions) and server.sessions[0].ended)
            ws.transport.resume_reading()
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert server.sessions[0].close_sent == 1011  # websockets: keepalive ping timeout


# --------------------------------------------------------------------------- faults


async def test_drop_after_audio_ms_aborts_without_a_close_frame() -> None:
    async with emulator() as server:
        url = _url(server, REALTIME, encoding="pcm_s16le", emulator_drop_after_ms="1400")
        received: list[dict[str, Any]] = []
        async with connect(url, additional_headers=KEY) as ws:
            await _send_all(ws, _split(PCM, 7, 5000))
            with pytest.raises(ConnectionClosedError) as info:
                await _collect(ws, received)
        assert info.value.rcvd is None  # TCP aborted, no close frame
        assert [m["text"] for m in received] == ["alpha bravo"]
        assert server.sessions[0].audio_ms == 1400
        assert server.sessions[0].fault == "drop"


async def test_server_wide_drop_with_a_close_code() -> None:
    faults = Faults(drop_after_ms=500, drop_close_code=4000)
    async with emulator(faults=faults) as server:
        for _ in range(2):  # every connection drops at the same audio time
            async with connect(
                _url(server, REALTIME, encoding="pcm_s16le"), additional_headers=KEY
            ) as ws:
                await ws.send(PCM)
                with pytest.raises(ConnectionClosedError) as info:
                    await ws.recv()
                assert info.value.rcvd is not None
                assert info.value.rcvd.code == 4000
        assert [s.audio_ms for s in server.sessions] == [500, 500]


@pytest.mark.parametrize("status", [402, 429, 500])
async def test_refuse_with_a_given_status(status: int) -> None:
    async with emulator() as server:
        refused = await _refusal(
            _url(server, REALTIME, emulator_refuse=str(status)), additional_headers=KEY
        )
    assert refused.response.status_code == status
    assert "X-Error-Message" in refused.response.headers


async def test_refuse_first_k_connections() -> None:
    async with emulator(faults=Faults(refuse_first=2)) as server:
        for _ in range(2):
            refused = await _refusal(_url(server, REALTIME), additional_headers=KEY)
            assert refused.response.status_code == 503
        async with connect(_url(server, REALTIME), additional_headers=KEY):
            pass
    async with emulator() as server:
        url = _url(server, TURNS, emulator_refuse_first="1", emulator_refuse="429")
        assert (await _refusal(url, additional_headers=KEY)).response.status_code == 429
        async with connect(url, additional_headers=KEY):
            pass
        assert server.refused == [429]


async def test_delay_keeps_order_and_delays_each_message() -> None:
    async with emulator() as server:
        url = _url(server, REALTIME, encoding="pcm_s16le", emulator_delay_ms="300")
        async with connect(url, additional_headers=KEY) as ws:
            loop = asyncio.get_running_loop()
            await ws.send(PCM)
            started = loop.time()
            messages = await _until_confirmed(ws, "late")
            assert loop.time() - started >= 0.3
    assert [m["text"] for m in _finals(messages)] == TEXTS
    assert messages[-1]["id"] == "late"


async def test_hang_after_audio_ms_stops_answering_pings() -> None:
    async with emulator() as server:
        url = _url(server, REALTIME, encoding="pcm_s16le", emulator_hang_after_ms="1000")
        async with connect(
            url, additional_headers=KEY, ping_interval=0.1, ping_timeout=0.2, close_timeout=0.2
        ) as ws:
            await ws.send(PCM)
            await ws.send(json.dumps({"type": "flush_request", "id": "never"}))
            received: list[dict[str, Any]] = []
            with pytest.raises(ConnectionClosedError) as info:
                await _collect(ws, received)
            assert {m["type"] for m in received} == {"transcript"}  # no confirmation
        assert info.value.sent is not None
        assert info.value.sent.code == 1011  # the client's keepalive gave up
        assert server.sessions[0].fault == "hang"
        assert server.sessions[0].audio_ms == 1000


async def test_undecodable_audio_closes_with_1007() -> None:
    garbage = bytes(random.Random(8).getrandbits(8) for _ in range(64 * 1024))
    async with emulator() as server:
        async with connect(_url(server, REALTIME), additional_headers=KEY) as ws:
            await ws.send(b"NOPE" + garbage)
            with pytest.raises(ConnectionClosedError) as info:
                await ws.recv()
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1007
        assert info.value.rcvd.reason.startswith("undecodable audio")
