"""The Reson8 WebSocket client boundary (picows).

:func:`open_connection` returns an :class:`UpstreamConnection` or raises an
:class:`~workers.errors.UpstreamError`; nothing from picows, the OS or the
message parser leaks past this module (STYLE.md, "One exception tree"):

- a refused handshake -> :class:`~workers.errors.UpstreamRefused` (status,
  code from either refusal style);
- an unreachable server, a broken handshake, any other failure to open ->
  :class:`~workers.errors.UpstreamError` (retriable);
- a lost connection, a close frame from the server, no pong in time, a
  frame over ``max_message_bytes`` -> :class:`~workers.errors.UpstreamClosed`;
- a text frame that is not valid protocol ->
  :class:`~workers.errors.UpstreamProtocolError`.

Why picows (measured side by side on the bench machine, client CPU per 3.2 kB
binary frame: websockets 6.0-8.0 us, aiohttp 2.6-2.9 us, picows 2.5 us): its
sends are plain synchronous writes, so the pump sends a session's pending
audio as soon as a run of records is routed, without a sender task and its
wake-up per connection; frames arrive through a callback.

The API key goes only into the ``Authorization`` header; the library's debug
log (which prints the upgrade request) goes through
:class:`~workers.redact.RedactingAdapter`, and no error message is built from
request objects.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import urlencode

from picows import PICOWS_DEBUG_LL as WIRE_DEBUG  # the level of the upgrade request's log
from picows import (
    WSCloseCode,
    WSFrame,
    WSInvalidStatusError,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)
from websockets.proxy import get_proxy
from websockets.uri import parse_uri

from schemas.wire import (
    ErrorBody,
    FlushRequest,
    MalformedMessage,
    ServerMessage,
    StreamParams,
    parse_server_message,
)
from workers.errors import (
    UpstreamClosed,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRefused,
)
from workers.link import RetryPolicy
from workers.redact import RedactingAdapter

__all__ = [
    "WIRE_DEBUG",
    "ConnectOptions",
    "RetryPolicy",
    "UpstreamConnection",
    "connection_url",
    "integration_header",
    "open_connection",
]

_READ_BUFFER_BYTES = 4096
_wire_log = RedactingAdapter(logging.getLogger("reson8.upstream.wire"))
_END = object()  # the messages() iterator ends cleanly


def _product_version() -> str:
    try:
        return version("reson8-kafka")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


@functools.cache
def _proxy_for(base_url: str) -> str | None:
    """The proxy the environment names for ``base_url`` (websockets' rule:
    ``wss_proxy``/``https_proxy``/``no_proxy``...), looked up once per process."""
    return get_proxy(parse_uri(base_url))


@functools.cache
def integration_header() -> str:
    """``X-Reson8-Integration``: this client and its version (the vendor's
    clients send ``<client>:<version>`` on every request)."""
    return f"reson8-kafka:{_product_version()}"


def connection_url(base_url: str, params: StreamParams) -> str:
    """Full URL of an endpoint with the params' query (never credentials)."""
    return f"{base_url}{params.path}?{urlencode(params.to_query())}"


@dataclass(frozen=True)
class ConnectOptions:
    """Transport settings of upstream connections."""

    base_url: str
    api_key: str
    open_timeout_s: float = 10.0
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    # A transcript is a few kB; anything near this is hostile (and would make
    # an output event larger than the producer takes).
    max_message_bytes: int = 256 * 1024

    def __repr__(self) -> str:  # never print the key
        return f"ConnectOptions(base_url={self.base_url!r}, api_key=***)"


class _Listener(WSListener):
    """picows callbacks -> the connection's queue of messages (or its end)."""

    def __init__(self, max_bytes: int) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.max_bytes = max_bytes
        self.closing = False  # we sent the close frame
        self.close_code: int | None = None
        self.paused = False
        self.on_writable: Callable[[], None] = lambda: None
        self._text: list[bytes] = []

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT or (kind == WSMsgType.CONTINUATION and self._text):
            self._on_text(transport, frame)
        elif kind == WSMsgType.CLOSE:
            payload = frame.get_payload_as_bytes()  # the code's first 2 bytes, any value
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
        elif kind == WSMsgType.PING:
            transport.send_pong(frame.get_payload_as_bytes())
        # BINARY and PONG frames carry nothing for us (the protocol page:
        # clients ignore binary frames from the server).

    def _on_text(self, transport: WSTransport, frame: WSFrame) -> None:
        self._text.append(frame.get_payload_as_bytes())
        if sum(len(part) for part in self._text) > self.max_bytes:
            self._text.clear()
            self.close_code = 1009
            transport.send_close(WSCloseCode.MESSAGE_TOO_BIG)
            transport.disconnect()
            return
        if frame.fin:
            text, self._text = b"".join(self._text), []
            self.queue.put_nowait(text)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.queue.put_nowait(_END)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.on_writable()


class UpstreamConnection:
    """One open WebSocket. :meth:`send_audio`/:meth:`send_flush` write at once
    (check :attr:`writable` first: while the socket's buffer is full, keep the
    audio and send it when ``on_writable`` is called); iterate :meth:`messages`.

    Every failure surfaces as an :class:`~workers.errors.UpstreamError`.
    """

    def __init__(self, transport: WSTransport, listener: _Listener, session_id: str) -> None:
        self._transport = transport
        self._listener = listener
        self._session_id = session_id

    @property
    def writable(self) -> bool:
        return not self._listener.paused

    @property
    def on_writable(self) -> Callable[[], None]:
        return self._listener.on_writable

    @on_writable.setter
    def on_writable(self, callback: Callable[[], None]) -> None:
        self._listener.on_writable = callback

    def send_audio(self, chunk: bytes) -> None:
        self._send(WSMsgType.BINARY, chunk)

    def send_flush(self, request: FlushRequest) -> None:
        self._send(WSMsgType.TEXT, request.to_json().encode())

    def _send(self, kind: WSMsgType, payload: bytes) -> None:
        if self._transport.is_disconnected or self._listener.closing:
            raise self._lost()
        try:
            self._transport.send(kind, payload)
        except Exception as exc:  # the transport failed under us
            raise UpstreamClosed(
                f"upstream connection failed: {type(exc).__name__}", session_id=self._session_id
            ) from None

    async def messages(self) -> AsyncIterator[ServerMessage]:
        """Parsed server messages; unknown types and binary frames are skipped.

        Ends with :class:`UpstreamClosed` when the connection is lost or
        :class:`UpstreamProtocolError` on a malformed frame (the connection
        is dropped), and returns normally only after a close that we started.
        """
        queue = self._listener.queue
        while True:
            item = await queue.get()
            if item is _END:
                if self._listener.closing:
                    return
                raise self._lost()
            message = self._parse(item)
            if message is not None:
                yield message

    def _parse(self, text: bytes) -> ServerMessage | None:
        try:
            return parse_server_message(text.decode("utf-8"))
        except (MalformedMessage, ValueError, TypeError, RecursionError) as exc:
            self.abort()
            detail = str(exc) if isinstance(exc, MalformedMessage) else type(exc).__name__
            raise UpstreamProtocolError(
                f"malformed upstream frame: {detail}", session_id=self._session_id
            ) from None

    async def close(self, timeout_s: float = 5.0) -> None:
        """Close with 1000 (a clean finish, reson8-protocol.md "Errors")."""
        if self._transport.is_disconnected:
            return
        self._listener.closing = True
        self._transport.send_close(WSCloseCode.OK)
        try:
            await asyncio.wait_for(self._transport.wait_disconnected(), timeout_s)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        """Drop the TCP connection at once."""
        self._transport.disconnect(graceful=False)

    def _lost(self) -> UpstreamClosed:
        code = self._listener.close_code
        reason = {None: "connection dropped", 1009: "frame too large"}.get(
            code, "closed the connection"
        )
        return UpstreamClosed(
            f"upstream {reason} (close code {code})", close_code=code, session_id=self._session_id
        )


async def open_connection(
    options: ConnectOptions, params: StreamParams, session_id: str
) -> UpstreamConnection:
    """Open the upstream connection for ``params``.

    Raises :class:`UpstreamRefused` (status-based ``retriable``) when the
    handshake is refused, :class:`UpstreamError` (retriable) when the server
    cannot be reached or the handshake fails otherwise.
    """
    url = connection_url(options.base_url, params)
    try:
        async with asyncio.timeout(options.open_timeout_s):
            transport, listener = await ws_connect(
                functools.partial(_Listener, options.max_message_bytes),
                url,
                ssl_context=_tls(options.base_url),
                websocket_handshake_timeout=options.open_timeout_s,
                logger_name=_wire_log,
                enable_auto_ping=options.ping_interval_s is not None,
                auto_ping_idle_timeout=options.ping_interval_s or 20.0,
                auto_ping_reply_timeout=options.ping_timeout_s or 20.0,
                max_frame_size=options.max_message_bytes,
                # The upstream sends small JSON messages and the buffer grows
                # for a larger one: picows' 16 KiB default per connection is
                # memory a session does not need.
                read_buffer_init_size=_READ_BUFFER_BYTES,
                extra_headers={
                    "Authorization": f"ApiKey {options.api_key}",
                    "X-Reson8-Integration": integration_header(),
                    "User-Agent": f"{integration_header()} picows",
                },
                proxy=_proxy_for(options.base_url),
            )
    except WSInvalidStatusError as exc:
        raise _refused(exc, session_id) from None
    except Exception as exc:  # OSError, TimeoutError, a broken handshake...
        raise UpstreamError(
            f"cannot reach upstream at {options.base_url}: {type(exc).__name__}",
            session_id=session_id,
            retriable=True,
        ) from None
    assert isinstance(listener, _Listener)
    return UpstreamConnection(transport, listener, session_id)


@functools.cache
def _default_tls() -> ssl.SSLContext:
    return ssl.create_default_context()


def _tls(base_url: str) -> ssl.SSLContext | None:
    return _default_tls() if base_url.startswith("wss://") else None


def _refused(exc: WSInvalidStatusError, session_id: str) -> UpstreamRefused:
    response = exc.response
    status = int(response.status) if response is not None else 0
    headers = response.headers if response is not None else {}
    body = ErrorBody.parse(bytes(exc.raw_body or b""), headers.get("X-Error-Message"), status)
    return UpstreamRefused(
        status,
        code=body.code if body else None,
        detail=body.detail if body else None,
        session_id=session_id,
    )
