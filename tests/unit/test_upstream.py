"""The upstream boundary's pure parts: URLs, headers, error mapping (no sockets).

tests/integration/test_upstream.py drives it against a hostile server.
"""

from __future__ import annotations

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close
from websockets.http11 import Response

from schemas.wire import StreamParams
from workers.upstream import (
    ConnectOptions,
    UpstreamConnection,
    _refused,
    connection_url,
    integration_header,
)

KEY = "sk-live-abcdef0123456789"


def test_the_url_carries_the_stream_parameters_and_never_the_key() -> None:
    params = StreamParams(encoding="mulaw", sample_rate=8000, endpoint="turns")
    url = connection_url("wss://api.example", params)
    assert url.startswith("wss://api.example/v1/speech-to-text/turns?")
    assert "encoding=mulaw" in url
    assert "sample_rate=8000" in url
    assert KEY not in repr(ConnectOptions(base_url="wss://x", api_key=KEY))


def test_the_integration_header_names_the_product_and_its_version() -> None:
    name, _, version = integration_header().partition(":")
    assert name == "reson8-kafka"
    assert version


def test_a_refusal_with_an_empty_body_takes_its_code_from_the_status() -> None:
    response = Response(402, "Payment Required", Headers({"X-Error-Message": "no credit"}), b"")
    refused = _refused(InvalidStatus(response), "s")
    assert (refused.status, refused.code, refused.retriable) == (402, "PAYMENT_REQUIRED", False)
    assert refused.detail == "no credit"


def test_a_lost_connection_names_its_close_code() -> None:
    conn = UpstreamConnection(None, "s")  # type: ignore[arg-type]
    error = conn._closed(ConnectionClosed(None, Close(1011, "keepalive ping timeout")))
    assert (error.close_code, error.retriable) == (1011, True)
    assert "ping timeout" in str(error)  # we closed: no pong came
    server = conn._closed(ConnectionClosed(Close(1011, "internal error"), None))
    assert "closed the connection" in str(server)
    dropped = conn._closed(ConnectionClosed(None, None))
    assert dropped.close_code is None
    assert "dropped" in str(dropped)
