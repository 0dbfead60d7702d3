"""The Reson8 WebSocket client boundary.

:func:`open_connection` returns an :class:`UpstreamConnection` or raises an
:class:`~workers.errors.UpstreamError`; nothing from ``websockets``, the OS or
the message parser leaks past this module (STYLE.md, "One exception tree"):

- a refused handshake -> :class:`~workers.errors.UpstreamRefused` (status,
  code from either refusal style);
- an unreachable server, a broken handshake, any other failure to open ->
  :class:`~workers.errors.UpstreamError` (retriable);
- a lost connection, a ping timeout, a frame over ``max_message_bytes`` ->
  :class:`~workers.errors.UpstreamClosed`;
- a text frame that is not valid protocol ->
  :class:`~workers.errors.UpstreamProtocolError`.

The API key goes only into the ``Authorization`` header; the websockets
client's own debug log (which prints request headers) goes through
:class:`~workers.redact.RedactingAdapter`, and no error message is built from
request objects.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.proxy import get_proxy
from websockets.uri import parse_uri
from websockets.version import version as websockets_version

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
    "ConnectOptions",
    "RetryPolicy",
    "UpstreamConnection",
    "connection_url",
    "integration_header",
    "open_connection",
]

_ws_log = RedactingAdapter(logging.getLogger("websockets.client"))


def _product_version() -> str:
    try:
        return version("reson8-kafka")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


@functools.cache
def _proxy_for(base_url: str) -> str | None:
    """The proxy the environment names for ``base_url`` (websockets' own rule),
    looked up once per process rather than on every connection."""
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


class UpstreamConnection:
    """One open WebSocket. Send audio and flushes; iterate :meth:`messages`.

    Every failure surfaces as an :class:`~workers.errors.UpstreamError`.
    """

    def __init__(self, ws: ClientConnection, session_id: str) -> None:
        self._ws = ws
        self._session_id = session_id

    async def send_audio(self, chunk: bytes) -> None:
        await self._send(chunk)

    async def send_flush(self, request: FlushRequest) -> None:
        await self._send(request.to_json())

    async def _send(self, frame: bytes | str) -> None:
        try:
            await self._ws.send(frame)
        except ConnectionClosed as exc:
            raise self._closed(exc) from None
        except Exception as exc:  # the transport failed under us
            raise self._broken(exc) from None

    async def messages(self) -> AsyncIterator[ServerMessage]:
        """Parsed server messages; unknown types and binary frames are skipped.

        Ends with :class:`UpstreamClosed` when the connection is lost or
        :class:`UpstreamProtocolError` on a malformed frame, and returns
        normally only after a clean close that we started.
        """
        while True:
            try:
                frame = await self._ws.recv()
            except ConnectionClosed as exc:
                if exc.rcvd_then_sent is False or _we_closed(exc):
                    return
                raise self._closed(exc) from None
            except Exception as exc:
                raise self._broken(exc) from None
            message = self._parse(frame)
            if message is not None:
                yield message

    def _parse(self, frame: str | bytes) -> ServerMessage | None:
        try:
            return parse_server_message(frame)
        except MalformedMessage as exc:
            raise UpstreamProtocolError(
                f"malformed upstream frame: {exc}", session_id=self._session_id
            ) from None
        except (ValueError, TypeError, RecursionError) as exc:
            raise UpstreamProtocolError(
                f"malformed upstream frame: {type(exc).__name__}", session_id=self._session_id
            ) from None

    async def close(self) -> None:
        """Close with 1000 (a clean finish, reson8-protocol.md "Errors")."""
        try:
            await self._ws.close(code=1000)
        except Exception as exc:
            raise self._broken(exc) from None

    def abort(self) -> None:
        """Drop the TCP connection at once (used when a task is cancelled)."""
        transport = self._ws.transport
        if transport is not None:
            transport.abort()

    def _closed(self, exc: ConnectionClosed) -> UpstreamClosed:
        code, reason = _close_of(exc)
        return UpstreamClosed(
            f"upstream {reason} (close code {code})", close_code=code, session_id=self._session_id
        )

    def _broken(self, exc: BaseException) -> UpstreamClosed:
        return UpstreamClosed(
            f"upstream connection failed: {type(exc).__name__}", session_id=self._session_id
        )


def _close_of(exc: ConnectionClosed) -> tuple[int | None, str]:
    """The close code and what it means: the server's, or ours when we closed
    first (1011 after a ping got no pong, 1009 on a frame over the limit)."""
    if exc.rcvd is not None:
        return exc.rcvd.code, "closed the connection"
    if exc.sent is not None:
        ours = {1011: "ping timeout", 1009: "frame too large"}
        return exc.sent.code, ours.get(exc.sent.code, "connection lost")
    return None, "connection dropped"


def _we_closed(exc: ConnectionClosed) -> bool:
    sent = exc.sent
    return sent is not None and sent.code == 1000 and exc.rcvd_then_sent is not None


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
        ws = await connect(
            url,
            additional_headers={
                "Authorization": f"ApiKey {options.api_key}",
                "X-Reson8-Integration": integration_header(),
            },
            open_timeout=options.open_timeout_s,
            ping_interval=options.ping_interval_s,
            ping_timeout=options.ping_timeout_s,
            compression=None,  # audio does not deflate; save the CPU
            max_size=options.max_message_bytes,
            max_queue=64,
            user_agent_header=f"reson8-kafka websockets/{websockets_version}",
            logger=_ws_log,
            proxy=_proxy_for(options.base_url),
        )
    except InvalidStatus as exc:
        raise _refused(exc, session_id) from None
    except Exception as exc:  # OSError, TimeoutError, InvalidHandshake, InvalidURI...
        raise UpstreamError(
            f"cannot reach upstream at {options.base_url}: {type(exc).__name__}",
            session_id=session_id,
            retriable=True,
        ) from None
    return UpstreamConnection(ws, session_id)


def _refused(exc: InvalidStatus, session_id: str) -> UpstreamRefused:
    response = exc.response
    body = ErrorBody.parse(
        bytes(response.body or b""), response.headers.get("X-Error-Message"), response.status_code
    )
    return UpstreamRefused(
        response.status_code,
        code=body.code if body else None,
        detail=body.detail if body else None,
        session_id=session_id,
    )
