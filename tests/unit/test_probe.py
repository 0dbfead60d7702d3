"""probe.http_status, without sockets: the connection is a fake handed out by
an intercepted ``asyncio.open_connection`` (the real-socket version is
tests/integration/test_probe.py). A worker that is not listening yet, or
that closes without answering, is an answer (None), not an error."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from workers.probe import http_status


@dataclass
class FakeWriter:
    written: bytearray = field(default_factory=bytearray)
    closed: bool = False

    def write(self, data: bytes) -> None:
        self.written += data

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        raise ConnectionResetError  # a peer that already went away


def serve(
    monkeypatch: pytest.MonkeyPatch, answer: bytes, then: Exception | None = None
) -> FakeWriter:
    """The next connection reads ``answer`` and then end of stream (or ``then``)."""
    writer = FakeWriter()

    async def open_connection(host: str, port: int) -> tuple[asyncio.StreamReader, FakeWriter]:
        reader = asyncio.StreamReader()
        reader.feed_data(answer)
        if then is None:
            reader.feed_eof()
        else:
            reader.set_exception(then)
        return reader, writer

    monkeypatch.setattr(asyncio, "open_connection", open_connection)
    return writer


async def test_the_status_code_of_the_answer_is_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    serve(monkeypatch, b'HTTP/1.1 503 Service Unavailable\r\n\r\n{"ready": false}')
    assert await http_status(6066, "/ready") == 503


async def test_it_asks_for_the_path_and_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    writer = serve(monkeypatch, b"HTTP/1.1 200 OK\r\n\r\n")
    assert await http_status(6066, "/healthz", host="10.0.0.7") == 200
    assert bytes(writer.written) == b"GET /healthz HTTP/1.0\r\nHost: 10.0.0.7\r\n\r\n"
    assert writer.closed


async def test_no_answer_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    serve(monkeypatch, b"")
    assert await http_status(6066, "/ready") is None


async def test_nothing_listening_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refused(host: str, port: int) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(asyncio, "open_connection", refused)
    assert await http_status(6066, "/ready") is None


async def test_a_connection_reset_before_the_answer_is_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    serve(monkeypatch, b"", then=ConnectionResetError(104, "Connection reset by peer"))
    assert await http_status(6066, "/ready") is None
