"""probe.http_status on real loopback sockets: a port nobody listens on, a
server that answers, one that hangs up without answering."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from workers.probe import http_status

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> int:
        srv = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(srv)
        return int(srv.sockets[0].getsockname()[1])

    yield start
    for srv in servers:
        srv.close()
        await srv.wait_closed()


async def test_nothing_listening_is_none() -> None:
    assert await http_status(free_port(), "/ready") is None


async def test_the_status_of_a_real_answer(server: Callable[[Handler], Awaitable[int]]) -> None:
    async def ready(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    assert await http_status(await server(ready), "/ready") == 503


async def test_a_server_hanging_up_is_none(server: Callable[[Handler], Awaitable[int]]) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # read it all: a clean close, not a reset
        writer.close()

    assert await http_status(await server(hang_up), "/ready") is None
