"""The upstream boundary's pure parts: URLs, headers, error mapping (no sockets).

tests/integration/test_upstream.py drives it against a hostile server.
"""

from __future__ import annotations

from multidict import CIMultiDict
from picows import WSInvalidStatusError, WSUpgradeResponse

from schemas.wire import StreamParams
from workers.upstream import (
    ConnectOptions,
    UpstreamConnection,
    _Listener,
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


def refusal(status: int, headers: dict[str, str], body: bytes) -> WSInvalidStatusError:
    response = WSUpgradeResponse()
    response.status = status
    response.headers = CIMultiDict(headers)
    return WSInvalidStatusError("refused", b"", body, response)


def test_a_refusal_with_an_empty_body_takes_its_code_from_the_status() -> None:
    refused = _refused(refusal(402, {"X-Error-Message": "no credit"}, b""), "s")
    assert (refused.status, refused.code, refused.retriable) == (402, "PAYMENT_REQUIRED", False)
    assert refused.detail == "no credit"


def test_a_refusal_with_a_json_body_takes_its_code() -> None:
    refused = _refused(refusal(401, {}, b'{"code": "unauthorized"}'), "s")
    assert (refused.status, refused.code) == (401, "UNAUTHORIZED")


class _Transport:
    is_disconnected = True


def test_a_lost_connection_names_its_close_code() -> None:
    listener = _Listener(1024)
    conn = UpstreamConnection(_Transport(), listener, "s")  # type: ignore[arg-type]
    dropped = conn._lost()
    assert dropped.close_code is None
    assert "dropped" in str(dropped)
    listener.close_code = 1011
    closed = conn._lost()
    assert (closed.close_code, closed.retriable) == (1011, True)
    assert "closed the connection" in str(closed)
    listener.close_code = 1009
    assert "frame too large" in str(conn._lost())
