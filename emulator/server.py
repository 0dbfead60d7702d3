"""The emulator's asyncio server: a thin pump around ``emulator.protocol``.

One host:port serves ``/v1/speech-to-text/realtime``, ``/v1/speech-to-text/turns``
(WebSocket), ``POST /v1/auth/token`` and ``POST /v1/speech-to-text/prerecorded``
(see ``emulator.http_layer``), so a third-party Reson8 client works by changing
only its base URL::

    async with EmulatorServer(EmulatorConfig(recognizer="tones")) as server:
        url = server.url  # ws://127.0.0.1:PORT

Handshake checks, in order: path (404), fault parameters (400), injected
refusals (``refuse``/``refuse_first``), credentials (401), stream parameters
(400, ``StreamParams.from_query``), the concurrent-session limit (429). Every
refusal carries ``X-Error-Message``, and a JSON ``{"code", "detail"}`` body or
none (``refusal_style``). Keepalive is websockets' own
(``ping_interval``/``ping_timeout``): a client that stops answering pings is
closed (1011).

The real recognizers decode in a :class:`~emulator.recognizers.pool.DecodePool`
(one process per core, finals first): the pump hands each ``Decode`` action
to it and feeds the words back, one connection's calls serialized by a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from emulator.audio import AudioInput
from emulator.auth import Authenticator, AuthError
from emulator.errors import ConfigError, DecodeError, UnsupportedInput
from emulator.faults import QUERY_PREFIX, FaultError, Faults
from emulator.http_layer import (
    HttpRequest,
    RefusalStyle,
    SniffingConnection,
    error_response,
    json_response,
)
from emulator.protocol import (
    Action,
    Close,
    Connection,
    Decode,
    Drop,
    Hang,
    Send,
    TurnOptions,
    create_session,
)
from emulator.recognizers.base import TRANSCRIBES
from emulator.recognizers.pool import FILE, DecodePool
from schemas.wire import (
    ENDPOINTS,
    PATH_PREFIX,
    PRERECORDED_PATH,
    TOKEN_PATH,
    InvalidParameter,
    PrerecordedParams,
    StreamParams,
)

__all__ = ["EmulatorConfig", "EmulatorObserver", "EmulatorServer", "SessionStats"]

log = logging.getLogger("emulator")


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything the emulator can be configured with.

    ``port=0`` picks a free port (read it back from :attr:`EmulatorServer.url`).
    ``api_keys`` empty accepts any non-empty key; ``custom_models`` lists the
    ``custom_model_id`` values accepted (any other is refused with 400). ``max_sessions`` None means
    no limit. ``ping_interval``/``ping_timeout``/``close_timeout`` are seconds
    (None disables). ``clock`` drives token expiry (inject one in tests).
    ``observer`` (optional) is told of every audio frame received and every
    text frame sent, e.g. to time them. ``decode_workers`` is the number of
    decode processes of a real recognizer (None: one per core);
    ``max_body_bytes`` the largest prerecorded body (413 above it);
    ``refusal_style`` ``json`` (docs) or ``bare`` (empty upgrade refusals,
    lower_snake codes); ``turn_continuation``/``repeat_candidates`` see
    :class:`emulator.protocol.TurnOptions`.
    """

    host: str = "127.0.0.1"
    port: int = 0
    recognizer: str = "tones"
    recognizer_options: Mapping[str, Any] = field(default_factory=dict)
    api_keys: tuple[str, ...] = ()
    token_ttl_s: float = 600.0
    max_sessions: int | None = None
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    close_timeout: float | None = 5.0
    utterance_end_ms: int = 300
    custom_models: Collection[str] = ()
    faults: Faults = field(default_factory=Faults)
    decode_workers: int | None = None
    max_body_bytes: int = 25 * 1024 * 1024
    refusal_style: RefusalStyle = "json"
    turn_continuation: bool = True
    repeat_candidates: bool = False
    clock: Callable[[], float] = time.monotonic
    observer: EmulatorObserver | None = None


class EmulatorObserver(Protocol):
    """Sees every frame of every accepted session as it crosses the socket.

    The benchmarks use it to time audio arrival and transcript departure
    (``bench/``). Called on the event loop: keep it to an append.
    """

    def audio_received(self, stats: SessionStats, nbytes: int) -> None:
        """A binary frame of ``nbytes`` arrived (before it is decoded)."""

    def frame_sent(self, stats: SessionStats, frame: str) -> None:
        """The text ``frame`` was just written to the socket."""


@dataclass
class SessionStats:
    """Counters of one accepted WebSocket session (read them in tests)."""

    index: int
    endpoint: str
    params: StreamParams
    faults: Faults
    audio_ms: int = 0
    frames_received: int = 0
    messages_sent: int = 0
    fault: str | None = None  # "drop" | "hang" | "invalid_data" once applied
    close_sent: int | None = None  # close code the server sent, if any
    ended: bool = False
    integration: str | None = None  # the client's X-Reson8-Integration header, if any


@dataclass
class _Accepted:
    """What process_request decided for a connection that gets upgraded."""

    params: StreamParams
    faults: Faults
    subprotocol: str | None
    connection: Connection
    integration: str | None = None
    handled: bool = False


class _Conn(SniffingConnection):
    emulator: EmulatorServer
    accepted: _Accepted | None = None
    holds_slot = False

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.accepted is not None and not self.accepted.handled:
            self.accepted.connection.close()  # the handshake failed after admission
        if self.holds_slot:
            self.holds_slot = False
            self.emulator._release_slot()


class EmulatorServer:
    """A running emulator. Use ``async with EmulatorServer(config) as server``.

    Counters (``accepted``, ``refused``, ``active_sessions``, ``sessions``,
    ``tokens_issued``) change as clients come and go; wait on them with
    :meth:`wait_until` rather than sleeping.
    """

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.auth = Authenticator(
            self.config.api_keys, token_ttl_s=self.config.token_ttl_s, clock=self.config.clock
        )
        self.accepted = 0
        self.refused: list[int] = []
        self.active_sessions = 0
        self.sessions: list[SessionStats] = []
        self.tokens_issued = 0
        self._attempts: dict[str, int] = {}
        self._server: Server | None = None
        self._changed = asyncio.Event()
        self._hung: set[ServerConnection] = set()
        self.pool: DecodePool | None = None
        self.prerecorded = 0

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving; then read :attr:`url`.

        Raises :class:`~emulator.errors.ConfigError` for an unknown recognizer.
        """
        from emulator.recognizers.base import RECOGNIZERS

        cfg = self.config
        if cfg.recognizer not in RECOGNIZERS:
            raise ConfigError(f"unknown recognizer {cfg.recognizer!r}; use one of {RECOGNIZERS}")
        if cfg.recognizer != "tones":
            from emulator.recognizers.engines import load_engine

            await asyncio.to_thread(load_engine, cfg.recognizer)  # fail here if it can't load
            self.pool = DecodePool((cfg.recognizer,), cfg.decode_workers)
            await self.pool.start()
        attrs = {"emulator": self, "http_app": self, "refusal_style": cfg.refusal_style}
        conn_class = type("_BoundConn", (_Conn,), attrs)
        self._server = await serve(
            self._handle,
            cfg.host,
            cfg.port,
            process_request=self._process_request,
            select_subprotocol=self._select_subprotocol,
            ping_interval=cfg.ping_interval,
            ping_timeout=cfg.ping_timeout,
            close_timeout=cfg.close_timeout,
            max_size=None,
            create_connection=conn_class,
        )

    async def stop(self) -> None:
        """Close every connection (1001) and stop listening."""
        for connection in list(self._hung):
            connection.transport.abort()  # a hung peer would never finish closing
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    async def __aenter__(self) -> EmulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- addresses -----------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """Base WebSocket URL, e.g. ``ws://127.0.0.1:8765`` (append the endpoint path)."""
        return f"ws://{self._host}:{self.port}"

    @property
    def http_url(self) -> str:
        """Base HTTP URL for ``POST /v1/auth/token``."""
        return f"http://{self._host}:{self.port}"

    @property
    def transcribes(self) -> str:
        """What the recognizer can transcribe (for the startup line and docs)."""
        return TRANSCRIBES[self.config.recognizer]

    @property
    def _host(self) -> str:
        host = self.config.host or "127.0.0.1"
        return f"[{host}]" if ":" in host else host

    # -- waiting -------------------------------------------------------------

    async def wait_until(self, predicate: Callable[[], bool], limit_s: float = 10.0) -> None:
        """Wait until ``predicate()`` holds (re-checked on every counter change);
        raises ``TimeoutError`` after ``limit_s`` seconds."""
        async with asyncio.timeout(limit_s):
            while not predicate():
                await self._changed.wait()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # -- HTTP ----------------------------------------------------------------

    def route(self, request: HttpRequest) -> Response | int:
        """Answer a plain HTTP request head: a refusal now, or the body size to accept."""
        path = urlsplit(request.target).path
        if path not in (TOKEN_PATH, PRERECORDED_PATH):
            return self._refuse_http(404, f"no such resource: {path}")
        if request.method != "POST":
            return self._refuse_http(405, f"use POST for {path}")
        if path == TOKEN_PATH:
            return self._token(request)
        return self.config.max_body_bytes

    async def respond(self, request: HttpRequest, body: bytes) -> Response:
        """Answer ``POST /v1/speech-to-text/prerecorded`` once its body is in."""
        split = urlsplit(request.target)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        try:
            self.auth.check(request.headers, [], query)
            PrerecordedParams.from_query(query)
        except AuthError as exc:
            return self._refuse_http(401, str(exc))
        except InvalidParameter as exc:
            return self._refuse_http(400, f"invalid parameter {exc.param}: {exc.detail}")
        try:
            answer = await self._transcribe(body, query)
        except DecodeError as exc:
            return self._refuse_http(400, f"undecodable audio: {exc.detail}"[:200])
        self.prerecorded += 1
        self._notify()
        return json_response(200, answer)

    async def _transcribe(self, body: bytes, query: dict[str, str]) -> str:
        from emulator.prerecorded import transcribe

        args = (self.config.recognizer, body, query, self.config.utterance_end_ms)
        if self.pool is None:  # tones: cheap, a thread keeps the loop free
            return await asyncio.to_thread(transcribe, *args)
        return await self.pool.run(FILE, transcribe, *args)

    def _token(self, request: HttpRequest) -> Response:
        try:
            token = self.auth.issue_token(request.headers.get("authorization"))
        except AuthError as exc:
            return self._refuse_http(401, str(exc))
        self.tokens_issued += 1
        self._notify()
        return json_response(200, token.model_dump_json())

    def _refuse_http(self, status: int, detail: str) -> Response:
        return error_response(status, detail, self.config.refusal_style)

    # -- handshake -----------------------------------------------------------

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        assert isinstance(connection, _Conn)
        try:
            connection.accepted = await self._admit(connection, request)
        except _Refusal as refusal:
            self.refused.append(refusal.status)
            self._notify()
            log.info("refused %s: %d %s", urlsplit(request.path).path, refusal.status, refusal)
            style = self.config.refusal_style
            return error_response(refusal.status, refusal.detail, style, upgrade=True)
        self.accepted += 1
        self._notify()
        return None

    async def _admit(self, connection: _Conn, request: Request) -> _Accepted:
        """Decide a handshake; raises :class:`_Refusal` (never with a secret)."""
        split = urlsplit(request.path)
        endpoint = split.path.removeprefix(PATH_PREFIX)
        if not split.path.startswith(PATH_PREFIX) or endpoint not in ENDPOINTS:
            raise _Refusal(404, f"no such resource: {split.path}")
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        try:
            faults = self.config.faults.from_query(query)
        except FaultError as exc:
            raise _Refusal(400, f"invalid parameter {exc.param}: {exc.detail}") from None
        self._injected_refusal(faults, request.path)
        subprotocols = request.headers.get_all("Sec-WebSocket-Protocol")
        offered = [p.strip() for value in subprotocols for p in value.split(",") if p.strip()]
        headers = {name.lower(): value for name, value in request.headers.raw_items()}
        try:
            credentials = self.auth.check(headers, offered, query)
            api_query = {k: v for k, v in query.items() if not k.startswith(QUERY_PREFIX)}
            params = StreamParams.from_query(endpoint, api_query)
        except AuthError as exc:
            raise _Refusal(401, str(exc)) from None
        except InvalidParameter as exc:
            raise _Refusal(400, f"invalid parameter {exc.param}: {exc.detail}") from None
        model = params.custom_model_id
        if model is not None and model not in self.config.custom_models:
            # protocol page, query table: an unknown custom_model_id is refused with 400
            raise _Refusal(400, f"invalid parameter custom_model_id: unknown model {model!r}")
        try:
            session = await asyncio.to_thread(self._connection, params, faults)
        except UnsupportedInput as exc:  # e.g. a sample rate the recognizer cannot do
            raise _Refusal(400, f"invalid parameter: {exc}") from None
        try:
            self._take_slot(connection)
        except _Refusal:
            session.close()
            raise
        integration = headers.get("x-reson8-integration")
        return _Accepted(params, faults, credentials.subprotocol, session, integration)

    def _injected_refusal(self, faults: Faults, target: str) -> None:
        """Apply ``refuse``/``refuse_first`` (see ``emulator.faults``)."""
        if faults.refuse_first is not None:
            from_query = faults.refuse_first != self.config.faults.refuse_first
            key = target if from_query else ""
            seen = self._attempts.get(key, 0)
            self._attempts[key] = seen + 1
            if seen < faults.refuse_first:
                raise _Refusal(faults.refuse_status, "refused by fault injection")
            return
        if faults.refuse is not None:
            raise _Refusal(faults.refuse, "refused by fault injection")

    def _take_slot(self, connection: _Conn) -> None:
        limit = self.config.max_sessions
        if limit is not None and self.active_sessions >= limit:
            raise _Refusal(429, f"too many concurrent sessions (limit {limit})")
        self.active_sessions += 1
        connection.holds_slot = True

    def _release_slot(self) -> None:
        self.active_sessions -= 1
        self._notify()

    def _select_subprotocol(
        self, connection: ServerConnection, subprotocols: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        # Answer `bearer` when the token came that way; never echo the token.
        accepted = getattr(connection, "accepted", None)
        if accepted is None or accepted.subprotocol is None:
            return None
        return Subprotocol(accepted.subprotocol)

    # -- the pump ------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        assert isinstance(ws, _Conn)
        assert ws.accepted is not None
        accepted = ws.accepted
        stats = SessionStats(
            len(self.sessions),
            accepted.params.endpoint,
            accepted.params,
            accepted.faults,
            integration=accepted.integration,
        )
        self.sessions.append(stats)
        self._notify()
        outbox = _Outbox(ws, accepted.faults.delay_ms / 1000, stats, self.config.observer)
        accepted.handled = True
        connection = accepted.connection
        try:
            await self._pump(ws, connection, outbox, stats)
        finally:
            await outbox.aclose()
            connection.close()
            close_sent = ws.protocol.close_sent
            stats.close_sent = close_sent.code if close_sent is not None else stats.close_sent
            stats.ended = True
            self._hung.discard(ws)
            self._notify()

    def _connection(self, params: StreamParams, faults: Faults) -> Connection:
        """Recognizer, session and decoder of one connection; raises ``ValueError``."""
        from emulator.recognizers import create_recognizer

        cfg = self.config
        options = {"utterance_end_ms": cfg.utterance_end_ms, **cfg.recognizer_options}
        language = params.language or None
        recognizer = create_recognizer(cfg.recognizer, language=language, **options)
        turns = TurnOptions(
            utterance_end_ms=cfg.utterance_end_ms,
            continuation=cfg.turn_continuation,
            repeat_candidates=cfg.repeat_candidates,
        )
        session = create_session(params, recognizer, turns=turns)
        return Connection(
            session,
            AudioInput(params.encoding, params.sample_rate, params.channels),
            drop_after_ms=faults.drop_after_ms,
            drop_close_code=faults.drop_close_code,
            hang_after_ms=faults.hang_after_ms,
        )

    async def _pump(
        self, ws: ServerConnection, connection: Connection, outbox: _Outbox, stats: SessionStats
    ) -> None:
        observer = self.config.observer
        turn = _Turn(self, ws, connection, outbox, stats)
        try:
            async for message in ws:
                stats.frames_received += 1
                if isinstance(message, str):
                    done = await turn.step(connection.receive_text, message)
                else:
                    if observer is not None:
                        observer.audio_received(stats, len(message))
                    done = await turn.step(connection.receive_bytes, message)
                if done:
                    return
        except ConnectionClosed:
            return
        finally:
            turn.cancel()

    async def _apply(
        self, ws: ServerConnection, actions: list[Action], outbox: _Outbox, stats: SessionStats
    ) -> bool:
        """Carry out ``actions`` (Decode aside); True when the connection is finished."""
        for action in actions:
            if isinstance(action, Send):
                outbox.put(action.frame)
                continue
            if isinstance(action, Decode):
                continue
            await outbox.drain()  # what was produced before the end is delivered
            if isinstance(action, Close):
                stats.fault = "invalid_data"
                await ws.close(action.code, action.reason)
            elif isinstance(action, Drop):
                stats.fault = "drop"
                await _drop(ws, action.code)
            elif isinstance(action, Hang):
                stats.fault = "hang"
                await self._hang(ws)
            return True
        return False

    async def _hang(self, ws: ServerConnection) -> None:
        # Stop reading: pings get no pong, audio is not consumed, nothing is sent.
        # websockets' own keepalive eventually closes the connection.
        self._hung.add(ws)
        self._notify()
        ws.transport.pause_reading()
        await ws.wait_closed()


async def _drop(ws: ServerConnection, code: int | None) -> None:
    if code is None:
        ws.transport.abort()  # no close frame: what a network failure looks like
        return
    await ws.close(code, "dropped by fault injection")


class _Turn:
    """Takes turns at one connection's sans-I/O object: frames and decode results.

    A lock serializes the calls (frames are handled in a thread, results on
    the loop); each ``Decode`` action becomes a task that waits for the pool
    and feeds the words back the same way.
    """

    def __init__(
        self,
        server: EmulatorServer,
        ws: ServerConnection,
        connection: Connection,
        outbox: _Outbox,
        stats: SessionStats,
    ) -> None:
        self._server, self._ws, self._connection = server, ws, connection
        self._outbox, self._stats = outbox, stats
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def step(self, method: Callable[[Any], list[Action]], argument: Any) -> bool:
        """Feed one frame; True when the connection is finished."""
        async with self._lock:
            actions = await asyncio.to_thread(method, argument)
            return await self._carry_out(actions)

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def _carry_out(self, actions: list[Action]) -> bool:
        stats = self._stats
        stats.audio_ms = self._connection.audio_ms
        self._server._notify()
        for action in actions:
            if isinstance(action, Decode):
                task = asyncio.get_running_loop().create_task(self._decode(action))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return await self._server._apply(self._ws, actions, self._outbox, stats)

    async def _decode(self, action: Decode) -> None:
        pool = self._server.pool
        assert pool is not None, "a Decode action needs a real recognizer's pool"
        words = await pool.decode(action.job)
        async with self._lock:
            await self._carry_out(self._connection.decoded(action.job, words))


class _Refusal(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _Outbox:
    """Sends frames in order, each ``delay_s`` after it was queued (fault ``delay_ms``)."""

    def __init__(
        self,
        ws: ServerConnection,
        delay_s: float,
        stats: SessionStats,
        observer: EmulatorObserver | None = None,
    ) -> None:
        self._ws = ws
        self._observer = observer
        self._delay = delay_s
        self._stats = stats
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
        self._task = self._loop.create_task(self._run())

    def put(self, frame: str) -> None:
        self._queue.put_nowait((self._loop.time() + self._delay, frame))

    async def drain(self) -> None:
        """Wait until everything queued so far was sent (or the socket is gone)."""
        await self._queue.join()

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            due, frame = await self._queue.get()
            try:
                wait = due - self._loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)  # the injected delay itself
                await self._ws.send(frame)
                self._stats.messages_sent += 1
                if self._observer is not None:
                    self._observer.frame_sent(self._stats, frame)
            except ConnectionClosed:
                pass
            finally:
                self._queue.task_done()
