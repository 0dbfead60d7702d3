"""Plain HTTP on the WebSocket port: ``POST /v1/auth/token`` next to the upgrades.

websockets' HTTP parser refuses any method but GET before a hook runs, yet a
third-party client only changes the base URL, so the token endpoint must live
on the same host:port (protocol page, "Endpoints and auth"). The documented
escape hatch ``serve(create_connection=...)`` lets us put
:class:`SniffingConnection` in front: it reads the request line; a GET goes to
websockets untouched, anything else is parsed here (head + ``Content-Length``
body), answered by a callback, and the connection closed. websockets' handler
task for that connection sees the connection lost before any request and exits.
"""

from __future__ import annotations

import email.utils
import http
from collections.abc import Callable
from dataclasses import dataclass

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Response

from schemas.wire import ErrorBody

__all__ = ["HttpRequest", "SniffingConnection", "error_response", "json_response"]

MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class HttpRequest:
    """A non-GET request: method, path with query, lower-cased header names."""

    method: str
    target: str
    headers: dict[str, str]


HttpHandler = Callable[[HttpRequest], Response]


def json_response(status: int, body: str, extra: dict[str, str] | None = None) -> Response:
    """A ``Connection: close`` response with a JSON body."""
    payload = body.encode()
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
        ]
    )
    for name, value in (extra or {}).items():
        headers[name] = value
    return Response(status, _phrase(status), headers, payload)


def error_response(status: int, detail: str) -> Response:
    """A refusal as the stand-in sends it: status, ``X-Error-Message`` and JSON
    ``{"code", "detail"}`` (protocol page, "Errors"). ``detail`` must not hold a
    secret."""
    body = ErrorBody.for_status(status, detail).model_dump_json(exclude={"status"})
    return json_response(status, body, {"X-Error-Message": detail})


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class SniffingConnection(ServerConnection):
    """A websockets connection that answers non-GET requests itself.

    Subclass it with ``http_handler`` set (see ``emulator.server``); the handler
    must return quickly (it runs inside ``data_received``).
    """

    http_handler: HttpHandler

    _mode = "sniff"  # "sniff" -> "ws" | "http"
    _head = b""

    def data_received(self, data: bytes) -> None:
        if self._mode == "ws":
            super().data_received(data)
            return
        self._head += data
        if self._mode == "sniff":
            self._sniff()
        if self._mode == "http":
            self._http()

    def eof_received(self) -> None:
        if self._mode == "ws":
            super().eof_received()
            return
        self.transport.close()  # a partial non-WebSocket request: give up

    def _sniff(self) -> None:
        if b"\r\n" not in self._head:
            if len(self._head) > MAX_HEAD:
                self.transport.close()
            return
        if self._head.startswith(b"GET "):
            self._mode = "ws"
            head, self._head = self._head, b""
            super().data_received(head)
            return
        self._mode = "http"

    def _http(self) -> None:
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD:
                self._reply(error_response(413, "request head too large"))
            return
        request, length = _parse_head(self._head[:end])
        if request is None or length is None or length > MAX_BODY:
            self._reply(error_response(400, "malformed HTTP request"))
            return
        if len(self._head) - end - 4 < length:
            return  # wait for the rest of the body (ignored: the token call has none)
        self._reply(self.http_handler(request))

    def _reply(self, response: Response) -> None:
        self._mode = "done"
        self.transport.write(response.serialize())
        self.transport.close()


def _parse_head(head: bytes) -> tuple[HttpRequest | None, int | None]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None, None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            return None, None
        headers[name.strip().lower()] = value.strip()
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        return None, None
    return HttpRequest(parts[0], parts[1], headers), length
