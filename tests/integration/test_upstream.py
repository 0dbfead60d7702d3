"""The upstream boundary against a hostile WebSocket server on loopback.

Every way a server can misbehave comes out of workers/upstream.py as one of
the project's UpstreamError types (issue 12: a malformed frame used to kill
the stream task silently), and the API key is never logged, even at DEBUG.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from schemas.wire import FlushConfirmation, StreamParams, Transcript
from workers.errors import (
    UpstreamClosed,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRefused,
)
from workers.upstream import WIRE_DEBUG, ConnectOptions, open_connection

KEY = "sk-test-0123456789abcdef"
PARAMS = StreamParams(encoding="pcm_s16le", sample_rate=16000, include_timestamps=True)
Behaviour = Callable[[ServerConnection], Any]


class Hostile:
    """A server whose handshake answer and per-connection behaviour are set per test."""

    def __init__(self) -> None:
        self.refuse: Response | None = None
        self.behaviour: Behaviour = self.echo
        self.requests: list[Request] = []

    def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        self.requests.append(request)
        return self.refuse

    async def handler(self, conn: ServerConnection) -> None:
        await self.behaviour(conn)

    @staticmethod
    async def echo(conn: ServerConnection) -> None:
        async for frame in conn:
            if isinstance(frame, str):
                await conn.send(FlushConfirmation(id=json.loads(frame).get("id")).to_json())
            else:
                await conn.send(Transcript(text="ok", start_ms=0, duration_ms=10).to_json())


@pytest.fixture
async def server() -> AsyncIterator[tuple[Hostile, str]]:
    hostile = Hostile()
    async with serve(
        hostile.handler, "127.0.0.1", 0, process_request=hostile.process_request
    ) as ws_server:
        port = ws_server.sockets[0].getsockname()[1]
        yield hostile, f"ws://127.0.0.1:{port}"


def options(url: str, **kw: Any) -> ConnectOptions:
    return ConnectOptions(base_url=url, api_key=KEY, open_timeout_s=5, **kw)


async def test_a_normal_connection_sends_and_receives(server: tuple[Hostile, str]) -> None:
    hostile, url = server
    conn = await open_connection(options(url), PARAMS, "s")
    conn.send_audio(b"\x00" * 320)
    messages = conn.messages()
    message = await anext(messages)
    assert isinstance(message, Transcript)
    await conn.close()
    with pytest.raises(StopAsyncIteration):
        await anext(messages)
    [request] = hostile.requests
    assert request.headers["Authorization"] == f"ApiKey {KEY}"
    assert request.headers["X-Reson8-Integration"].startswith("reson8-kafka:")
    assert KEY not in request.path


@pytest.mark.parametrize(
    ("status", "body", "header", "code", "retriable"),
    [
        (401, b'{"code": "UNAUTHORIZED"}', None, "UNAUTHORIZED", False),
        (402, b"", "out of credits", "PAYMENT_REQUIRED", False),
        (400, b"", "session_rejected", "SESSION_REJECTED", False),
        (429, b"", None, "TOO_MANY_REQUESTS", True),
        (503, b"<html>oops</html>", None, None, True),
    ],
)
async def test_refusals_of_either_style_map_onto_upstream_refused(
    server: tuple[Hostile, str],
    status: int,
    body: bytes,
    header: str | None,
    code: str | None,
    retriable: bool,
) -> None:
    hostile, url = server
    headers = Headers({"X-Error-Message": header} if header else {})
    hostile.refuse = Response(status, "refused", headers, body)
    with pytest.raises(UpstreamRefused) as caught:
        await open_connection(options(url), PARAMS, "s")
    assert caught.value.status == status
    assert caught.value.retriable is retriable
    if code is not None:
        assert caught.value.code == code
    assert KEY not in str(caught.value)


async def test_an_unreachable_server_is_a_retriable_upstream_error() -> None:
    with pytest.raises(UpstreamError) as caught:
        await open_connection(options("ws://127.0.0.1:1"), PARAMS, "s")
    assert caught.value.retriable


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2]",
        '{"type": 7}',
        '{"type": "transcript"}',
        '{"type": "turn_end_candidate", "start_ms": "x"}',
    ],
)
async def test_a_malformed_frame_is_a_protocol_error(
    server: tuple[Hostile, str], frame: str
) -> None:
    hostile, url = server

    async def send_junk(conn: ServerConnection) -> None:
        await conn.send(frame)
        await conn.wait_closed()

    hostile.behaviour = send_junk
    conn = await open_connection(options(url), PARAMS, "s")
    with pytest.raises(UpstreamProtocolError):
        async for _ in conn.messages():
            pass
    conn.abort()


async def test_unknown_types_and_binary_frames_are_ignored(server: tuple[Hostile, str]) -> None:
    hostile, url = server

    async def chatter(conn: ServerConnection) -> None:
        await conn.send('{"type": "something_new", "x": 1}')
        await conn.send(b"\x00\x01")
        await conn.send(Transcript(text="after", start_ms=0, duration_ms=5).to_json())
        await conn.wait_closed()

    hostile.behaviour = chatter
    conn = await open_connection(options(url), PARAMS, "s")
    message = await anext(conn.messages())
    assert isinstance(message, Transcript)
    assert message.text == "after"
    conn.abort()


async def test_a_frame_over_the_limit_closes_the_connection(server: tuple[Hostile, str]) -> None:
    hostile, url = server

    async def flood(conn: ServerConnection) -> None:
        await conn.send(json.dumps({"type": "transcript", "text": "x" * 100_000}))
        await conn.wait_closed()

    hostile.behaviour = flood
    conn = await open_connection(options(url, max_message_bytes=10_000), PARAMS, "s")
    with pytest.raises(UpstreamClosed, match="1009"):
        async for _ in conn.messages():
            pass
    conn.abort()


async def test_a_server_that_closes_at_once_is_a_lost_connection(
    server: tuple[Hostile, str],
) -> None:
    hostile, url = server

    async def close(conn: ServerConnection) -> None:
        await conn.close(1011)

    hostile.behaviour = close
    conn = await open_connection(options(url), PARAMS, "s")
    with pytest.raises(UpstreamClosed) as caught:
        async for _ in conn.messages():
            pass
    assert caught.value.close_code == 1011
    with pytest.raises(UpstreamClosed):
        conn.send_audio(b"\x00" * 32)


async def test_the_key_never_reaches_the_wire_debug_log(
    server: tuple[Hostile, str], caplog: pytest.LogCaptureFixture
) -> None:
    _, url = server
    with caplog.at_level(WIRE_DEBUG, logger="reson8.upstream.wire"):
        conn = await open_connection(options(url), PARAMS, "s")
        await conn.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "reson8.upstream.wire"]
    assert any("Authorization" in line for line in lines)  # the header is logged...
    assert not any(KEY in line for line in lines)  # ...without its value
