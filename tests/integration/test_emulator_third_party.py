"""A "third-party" Reson8 client, written only from the protocol page, against the emulator.

``third_party_transcribe`` imports nothing from this project: plain ``websockets``
and ``json``, as a customer's integration would be. Only the test around it
starts the emulator and makes the audio.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

from websockets.asyncio.client import connect

from emulator.samples import encode
from emulator.server import EmulatorConfig, EmulatorServer
from emulator.tones import expected_finals, synthesize


async def third_party_transcribe(
    base_url: str, api_key: str, wav: bytes
) -> list[dict[str, object]]:
    """Stream a WAV file to Reson8 realtime and return the final transcripts."""
    query = urlencode({"encoding": "auto", "include_timestamps": "true", "include_words": "true"})
    url = f"{base_url}/v1/speech-to-text/realtime?{query}"
    finals: list[dict[str, object]] = []
    async with connect(url, additional_headers={"Authorization": f"ApiKey {api_key}"}) as ws:
        for offset in range(0, len(wav), 3200):  # 100 ms of 16 kHz audio per frame
            await ws.send(wav[offset : offset + 3200])
        await ws.send(json.dumps({"type": "flush_request", "id": "eof"}))
        async for frame in ws:
            if isinstance(frame, bytes):
                continue  # binary frames from the server are ignored
            message = json.loads(frame)
            if message.get("type") == "transcript" and message.get("is_final", True):
                finals.append(message)
            elif message.get("type") == "flush_confirmation" and message.get("id") == "eof":
                break
        await ws.close(1000)
    return finals


async def test_third_party_client_needs_only_the_base_url() -> None:
    utterances = [["hotel", "india"], ["juliet", "golf", "alpha"]]
    wav = encode(synthesize(utterances), 16000, 1, "wav")
    config = EmulatorConfig(api_keys=("customer-key",))
    async with EmulatorServer(config) as server:
        finals = await third_party_transcribe(server.url, "customer-key", wav)
    got = [(f["text"], f["start_ms"], f["duration_ms"]) for f in finals]
    assert got == expected_finals(utterances)
    assert [w["text"] for w in finals[1]["words"]] == ["juliet", "golf", "alpha"]  # type: ignore[index,union-attr]
