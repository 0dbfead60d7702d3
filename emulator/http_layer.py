"""Plain HTTP on the WebSocket port: ``POST /v1/auth/token`` and
``POST /v1/speech-to-text/prerecorded`` next to the upgrades.

websockets' HTTP parser refuses any method but GET before a hook runs, yet a
third-party client only changes the base URL, so these endpoints must live
on the same host:port (protocol page, "Endpoints and auth"). The documented
escape hatch ``serve(create_connection=...)`` lets us put
:class:`SniffingConnection` in front: it reads the request line; a GET goes to
websockets untouched, anything else is parsed here and the connection closed
after one answer. websockets' handler task for that connection sees the
connection lost before any request and exits.

Routing comes first: once the head is in, :meth:`HttpApp.route` answers at
once (404, 405, 401...) or names the largest body it accepts; a
``Content-Length`` above that gets 413 ``PAYLOAD_TOO_LARGE`` before a byte of
the body is read, and the body is then collected and handed to
:meth:`HttpApp.respond` (a coroutine: transcribing takes a while).

Refusals come in two styles (protocol page, "Errors": sources disagree):
``json`` (the docs: ``X-Error-Message`` and ``{"code": "UPPER", "detail"}``)
and ``bare`` (the vendor's newest client: upgrades refused with
``X-Error-Message`` and an empty body, HTTP answers with lower_snake
``{"code", "title"}``).
"""

from __future__ import annotations

import asyncio
import email.utils
import http
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Literal, Protocol

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Response

from schemas.wire import ERROR_MESSAGE_HEADER, SNAKE_CODES, ErrorBody

__all__ = [
    "HttpApp",
    "HttpRequest",
    "RefusalStyle",
    "SniffingConnection",
    "error_response",
    "json_response",
]

MAX_HEAD = 16 * 1024
RefusalStyle = Literal["json", "bare"]


@dataclass(frozen=True)
class HttpRequest:
    """A non-GET request: method, path with query, lower-cased header names."""

    method: str
    target: str
    headers: dict[str, str]


class HttpApp(Protocol):
    """What answers the plain HTTP requests (``emulator.server``)."""

    def route(self, request: HttpRequest) -> Response | int:
        """Answer now (a refusal), or return the largest body to accept, in bytes."""
        ...

    def respond(self, request: HttpRequest, body: bytes) -> Awaitable[Response]:
        """Answer a routed request whose whole body arrived."""
        ...


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


def error_response(
    status: int, detail: str, style: RefusalStyle = "json", *, upgrade: bool = False
) -> Response:
    """A refusal: status, ``X-Error-Message: detail`` and the body of ``style``.

    ``json``: ``{"code": "INVALID_REQUEST", "detail"}`` (the docs). ``bare``:
    an empty body on a WebSocket ``upgrade``, else ``{"code": "invalid_request",
    "title"}``. ``detail`` must not hold a secret.
    """
    extra = {ERROR_MESSAGE_HEADER: detail}
    if style == "json":
        body = ErrorBody.for_status(status, detail).model_dump_json(exclude={"status"})
        return json_response(status, body, extra)
    if upgrade:
        return _empty_response(status, extra)
    code = SNAKE_CODES.get(status, "internal_error")
    return json_response(status, f'{{"code": "{code}", "title": "{_phrase(status)}"}}', extra)


def _empty_response(status: int, extra: dict[str, str]) -> Response:
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", "0"),
        ]
    )
    for name, value in extra.items():
        headers[name] = value
    return Response(status, _phrase(status), headers, b"")


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class SniffingConnection(ServerConnection):
    """A websockets connection that answers non-GET requests itself.

    Subclass it with ``http_app`` set (see ``emulator.server``).
    """

    http_app: HttpApp
    refusal_style: RefusalStyle = "json"

    _mode = "sniff"  # "sniff" -> "ws" | "http" -> "busy" -> "done"
    _head = b""
    _request: HttpRequest | None = None
    _length = 0
    _body: bytearray | None = None
    _task: asyncio.Task[None] | None = None

    def data_received(self, data: bytes) -> None:
        if self._mode == "ws":
            super().data_received(data)
            return
        if self._mode in ("busy", "done"):
            return  # one request per connection: the rest is ignored
        if self._body is not None:
            self._body += data
        else:
            self._head += data
        if self._mode == "sniff":
            self._sniff()
        if self._mode == "http":
            self._http()

    def eof_received(self) -> None:
        if self._mode == "ws":
            super().eof_received()
            return
        if self._mode != "busy":
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
        if self._request is None and not self._read_head():
            return
        assert self._body is not None
        assert self._request is not None
        if len(self._body) < self._length:
            return  # wait for the rest of the body
        self._mode = "busy"
        body = bytes(self._body[: self._length])
        self._body = bytearray()
        self._task = asyncio.get_running_loop().create_task(self._answer(self._request, body))

    def _read_head(self) -> bool:
        """Parse and route the head; True when a body is to be collected."""
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD:
                self._reply(self._error(431, "request head too large"))
            return False
        request, length = _parse_head(self._head[:end])
        if request is None or length is None:
            self._reply(self._error(400, "malformed HTTP request"))
            return False
        route = self.http_app.route(request)
        if not isinstance(route, int):
            self._reply(route)
            return False
        if length > route:
            self._reply(self._error(413, f"the body exceeds {route} bytes"))
            return False
        self._request, self._length = request, length
        self._body = bytearray(self._head[end + 4 :])
        self._head = b""
        return True

    async def _answer(self, request: HttpRequest, body: bytes) -> None:
        try:
            response = await self.http_app.respond(request, body)
        except Exception:  # answer 500 rather than leave the client hanging
            response = self._error(500, "internal error")
        self._reply(response)

    def _error(self, status: int, detail: str) -> Response:
        return error_response(status, detail, self.refusal_style)

    def _reply(self, response: Response) -> None:
        self._mode = "done"
        if not self.transport.is_closing():
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
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return None, None  # every client of this API sends a Content-Length
    raw = headers.get("content-length", "0")
    if not raw.isdigit() or len(raw) > 12:
        return None, None
    return HttpRequest(parts[0], parts[1], headers), int(raw)
