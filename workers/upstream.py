"""The Reson8 WebSocket client boundary and the retry policy.

:func:`open_connection` returns an :class:`UpstreamConnection` or raises an
:class:`~workers.errors.UpstreamError`; ``websockets`` errors never leak past
this module (STYLE.md, "One exception tree"). :class:`RetryPolicy` is data:
the one loop that reconnects (``workers.pump``) asks it for delays.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.version import version as websockets_version

from schemas.wire import ErrorBody, FlushRequest, ServerMessage, StreamParams, parse_server_message
from workers.errors import UpstreamClosed, UpstreamError, UpstreamRefused


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded in delay and attempts.

    ``delay(n)`` is the wait before attempt ``n`` (1-based) after a failure.
    """

    initial_s: float = 0.2
    max_s: float = 10.0
    multiplier: float = 2.0
    attempts: int = 8

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        cap = min(self.max_s, self.initial_s * self.multiplier ** max(0, attempt - 1))
        return (rng or random).uniform(cap / 2, cap)

    def exhausted(self, attempt: int) -> bool:
        return attempt > self.attempts


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


class UpstreamConnection:
    """One open WebSocket. Send audio and flushes; iterate :meth:`messages`.

    Every failure surfaces as :class:`UpstreamClosed` (retriable).
    """

    def __init__(self, ws: ClientConnection, session_id: str) -> None:
        self._ws = ws
        self._session_id = session_id

    async def send_audio(self, chunk: bytes) -> None:
        try:
            await self._ws.send(chunk)
        except ConnectionClosed as exc:
            raise self._closed(exc) from exc

    async def send_flush(self, request: FlushRequest) -> None:
        try:
            await self._ws.send(request.to_json())
        except ConnectionClosed as exc:
            raise self._closed(exc) from exc

    async def messages(self) -> AsyncIterator[ServerMessage]:
        """Parsed server messages; unknown types and binary frames are skipped.

        Ends with :class:`UpstreamClosed` when the connection is lost, and
        returns normally only after a clean close that we started.
        """
        while True:
            try:
                frame = await self._ws.recv()
            except ConnectionClosed as exc:
                if exc.rcvd_then_sent is False or _we_closed(exc):
                    return
                raise self._closed(exc) from exc
            message = parse_server_message(frame)
            if message is not None:
                yield message

    async def close(self) -> None:
        """Close with 1000 (a clean finish, reson8-protocol.md "Errors")."""
        await self._ws.close(code=1000)

    def abort(self) -> None:
        """Drop the TCP connection at once (used when a task is cancelled)."""
        transport = self._ws.transport
        if transport is not None:
            transport.abort()

    def _closed(self, exc: ConnectionClosed) -> UpstreamClosed:
        frame = exc.rcvd
        code = frame.code if frame is not None else None
        reason = "ping timeout" if code == 1011 else "connection lost"
        if frame is None:
            reason = "connection dropped"
        return UpstreamClosed(
            f"upstream {reason} (close code {code})", close_code=code, session_id=self._session_id
        )


def _we_closed(exc: ConnectionClosed) -> bool:
    sent = exc.sent
    return sent is not None and sent.code == 1000 and exc.rcvd_then_sent is not None


async def open_connection(
    options: ConnectOptions, params: StreamParams, session_id: str
) -> UpstreamConnection:
    """Open the upstream connection for ``params``.

    Raises :class:`UpstreamRefused` (status-based ``retriable``) when the
    handshake is refused, :class:`UpstreamError` (retriable) when the server
    cannot be reached. The API key goes only into the ``Authorization`` header.
    """
    url = connection_url(options.base_url, params)
    try:
        ws = await connect(
            url,
            additional_headers={"Authorization": f"ApiKey {options.api_key}"},
            open_timeout=options.open_timeout_s,
            ping_interval=options.ping_interval_s,
            ping_timeout=options.ping_timeout_s,
            compression=None,  # audio does not deflate; save the CPU
            max_queue=64,
            user_agent_header=f"reson8-kafka websockets/{websockets_version}",
        )
    except InvalidStatus as exc:
        raise _refused(exc, session_id) from None
    except (InvalidHandshake, OSError, TimeoutError) as exc:
        raise UpstreamError(
            f"cannot reach upstream at {options.base_url}: {type(exc).__name__}",
            session_id=session_id,
            retriable=True,
        ) from None
    return UpstreamConnection(ws, session_id)


def _refused(exc: InvalidStatus, session_id: str) -> UpstreamRefused:
    response = exc.response
    body = ErrorBody.parse(bytes(response.body or b""), response.headers.get("X-Error-Message"))
    return UpstreamRefused(
        response.status_code,
        code=body.code if body else None,
        detail=body.detail if body else None,
        session_id=session_id,
    )
