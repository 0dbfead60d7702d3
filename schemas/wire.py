"""Reson8 streaming wire protocol: query parameters and messages.

One set of models serves both sides: the emulator validates handshakes and
renders server messages with them; the worker builds its connection URL and
parses what the server sends. See ``../shared/reson8-protocol.md``.

Tolerance rules (the protocol page's "client does" lines):

- ``transcript`` without ``is_final`` is final.
- a word ``confidence`` <= 0 is a natural log-probability: mapped through
  ``exp()``; values are clamped to ``(0, 1]``.
- unknown ``type`` values and binary frames parse to ``None`` (ignored).
- refusal bodies may be JSON ``{"code", "detail"}`` or empty with an
  ``X-Error-Message`` header; codes match case-insensitively.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Endpoint = Literal["realtime", "turns"]
Encoding = Literal["auto", "pcm_s16le", "mulaw", "alaw"]
RAW_ENCODINGS: frozenset[str] = frozenset({"pcm_s16le", "mulaw", "alaw"})
ENDPOINTS: tuple[Endpoint, ...] = ("realtime", "turns")
LANGUAGES: frozenset[str] = frozenset({"de", "en", "es", "fr", "fy", "it", "nl", "pl", "pt", "sv"})
PATH_PREFIX = "/v1/speech-to-text/"
TOKEN_PATH = "/v1/auth/token"

# Parameters only the realtime endpoint accepts (protocol page, query table).
REALTIME_ONLY: frozenset[str] = frozenset(
    {"include_confidence", "include_interim", "diarize", "max_speakers"}
)
TURNS_ONLY: frozenset[str] = frozenset({"eager_turn_probability", "final_turn_probability"})
_BOOL_PARAMS: frozenset[str] = frozenset(
    {
        "include_timestamps",
        "include_words",
        "include_language",
        "include_confidence",
        "include_interim",
        "diarize",
    }
)
_INT_PARAMS: frozenset[str] = frozenset({"sample_rate", "channels", "max_speakers"})
_FLOAT_PARAMS: frozenset[str] = TURNS_ONLY
_STR_PARAMS: frozenset[str] = frozenset({"encoding", "language", "custom_model_id", "patterns"})
QUERY_PARAMS: frozenset[str] = _BOOL_PARAMS | _INT_PARAMS | _FLOAT_PARAMS | _STR_PARAMS

DEFAULT_EAGER = 0.5
DEFAULT_FINAL = 0.92


class InvalidParameter(ValueError):
    """A query parameter is malformed or out of range (the handshake gets 400).

    ``param`` names the offending parameter; the message is safe to show.
    """

    def __init__(self, param: str, detail: str) -> None:
        super().__init__(f"{param}: {detail}")
        self.param = param
        self.detail = detail


class MalformedMessage(ValueError):
    """A text frame is not a JSON object with a string ``type``."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# --------------------------------------------------------------------------- params


class StreamParams(_Model):
    """The configuration of one streaming connection (all of it is in the URL).

    Build it from a handshake with :meth:`from_query`, or directly in the worker;
    render the URL query with :meth:`to_query`. Validation enforces the
    protocol table: ranges, language codes, per-endpoint flags, eager <= final.
    """

    endpoint: Endpoint = "realtime"
    encoding: Encoding = "auto"
    sample_rate: Annotated[int, Field(ge=8000, le=96000)] = 16000
    channels: Annotated[int, Field(ge=1, le=10)] = 1
    language: tuple[str, ...] = ()
    custom_model_id: str | None = None
    include_timestamps: bool = False
    include_words: bool = False
    include_language: bool = False
    include_confidence: bool = False
    include_interim: bool = False
    diarize: bool = False
    max_speakers: Annotated[int, Field(ge=1, le=4)] | None = None
    patterns: str | None = None
    eager_turn_probability: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    final_turn_probability: Annotated[float, Field(ge=0.0, le=1.0)] | None = None

    @field_validator("language")
    @classmethod
    def _known_languages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [code for code in value if code not in LANGUAGES]
        if unknown:
            raise ValueError(f"unsupported language code {unknown[0]!r}")
        return value

    @model_validator(mode="after")
    def _endpoint_rules(self) -> Self:
        flags = self.model_dump(exclude_defaults=True)
        wrong = REALTIME_ONLY if self.endpoint == "turns" else TURNS_ONLY
        for name in sorted(wrong & flags.keys()):
            raise ValueError(f"{name} is not accepted by the {self.endpoint} endpoint")
        if self.eager > self.final:
            raise ValueError("eager_turn_probability must not exceed final_turn_probability")
        return self

    @property
    def eager(self) -> float:
        """Effective eager turn probability (default 0.5)."""
        value = self.eager_turn_probability
        return DEFAULT_EAGER if value is None else value

    @property
    def final(self) -> float:
        """Effective final turn probability (default 0.92)."""
        value = self.final_turn_probability
        return DEFAULT_FINAL if value is None else value

    @classmethod
    def from_query(cls, endpoint: str, query: Mapping[str, str]) -> StreamParams:
        """Parse and validate a handshake's query string.

        Unknown parameter names are ignored (forward compatibility). Raises
        :class:`InvalidParameter` for anything the server must refuse with 400.
        """
        if endpoint not in ENDPOINTS:
            raise InvalidParameter("endpoint", f"unknown endpoint {endpoint!r}")
        values: dict[str, Any] = {"endpoint": endpoint}
        for name, raw in query.items():
            if name in QUERY_PARAMS:
                values[name] = _coerce(name, raw)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise _invalid_from(exc) from exc

    def to_query(self) -> dict[str, str]:
        """Render as URL query parameters; defaults are left out except ``encoding``."""
        out: dict[str, str] = {"encoding": self.encoding}
        for name, value in self.model_dump(exclude_defaults=True, exclude={"endpoint"}).items():
            out[name] = _render(value)
        if self.encoding in RAW_ENCODINGS:
            out["sample_rate"] = str(self.sample_rate)
            out["channels"] = str(self.channels)
        return out

    @property
    def path(self) -> str:
        """URL path of this endpoint, e.g. ``/v1/speech-to-text/realtime``."""
        return PATH_PREFIX + self.endpoint


def _coerce(name: str, raw: str) -> Any:
    if name in _BOOL_PARAMS:
        if raw not in ("true", "false"):
            raise InvalidParameter(name, "must be 'true' or 'false'")
        return raw == "true"
    if name in _INT_PARAMS:
        try:
            return int(raw, 10)
        except ValueError:
            raise InvalidParameter(name, "must be an integer") from None
    if name in _FLOAT_PARAMS:
        try:
            value = float(raw)
        except ValueError:
            raise InvalidParameter(name, "must be a number") from None
        if not math.isfinite(value):
            raise InvalidParameter(name, "must be a finite number")
        return value
    if name == "language":
        return tuple(code.strip() for code in raw.split(",") if code.strip())
    return raw


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _invalid_from(exc: ValidationError) -> InvalidParameter:
    first = exc.errors()[0]
    loc = ".".join(str(part) for part in first["loc"]) or "query"
    message = str(first["msg"]).removeprefix("Value error, ")
    return InvalidParameter(loc, message)


# --------------------------------------------------------------------------- client


class FlushRequest(_Model):
    """Client -> server: finalize buffered audio (``id`` echoed in the confirmation)."""

    type: Literal["flush_request"] = "flush_request"
    id: str | None = None

    def to_json(self) -> str:
        """Serialize for a text frame; ``id`` is omitted when unset."""
        return self.model_dump_json(exclude_none=True)


# --------------------------------------------------------------------------- server


def _confidence(value: float | None) -> float | None:
    """Map a log-probability (<= 0) through exp() and clamp into (0, 1]."""
    if value is None:
        return None
    if value <= 0.0:
        value = math.exp(value)
    return min(max(value, 1e-6), 1.0)


class WireWord(_Model):
    """One word; timing and confidence are present only under their flags."""

    text: str
    start_ms: int | None = None
    duration_ms: int | None = None
    confidence: float | None = None

    @field_validator("confidence")
    @classmethod
    def _normalise(cls, value: float | None) -> float | None:
        return _confidence(value)


class _ServerMessage(_Model):
    def to_json(self) -> str:
        """Serialize for a text frame, leaving out fields that are unset."""
        return self.model_dump_json(exclude_none=True)


class Transcript(_ServerMessage):
    """A realtime result; ``is_final`` absent on the wire means final."""

    type: Literal["transcript"] = "transcript"
    text: str
    is_final: bool = True
    start_ms: int | None = None
    duration_ms: int | None = None
    words: tuple[WireWord, ...] | None = None
    language: str | None = None
    speaker_id: int | None = None

    def to_json(self, *, include_is_final: bool = True) -> str:
        """Serialize for a text frame. ``include_is_final=False`` leaves ``is_final``
        out (the server sends it only with ``include_interim``; absent means final)."""
        exclude = None if include_is_final else {"is_final"}
        return self.model_dump_json(exclude_none=True, exclude=exclude)


class FlushConfirmation(_ServerMessage):
    """Answers a ``flush_request``; ``id`` is ``null`` when the request had none."""

    type: Literal["flush_confirmation"] = "flush_confirmation"
    id: str | None = None

    def to_json(self) -> str:
        """Serialize keeping ``"id": null`` (the documented shape)."""
        return self.model_dump_json()


class TurnStart(_ServerMessage):
    """A new turn began."""

    type: Literal["turn_start"] = "turn_start"


class TurnEndCandidate(_ServerMessage):
    """The turn may be over; ``text`` is the whole turn so far (not a delta)."""

    type: Literal["turn_end_candidate"] = "turn_end_candidate"
    text: str = ""
    language: str | None = None
    start_ms: int | None = None
    duration_ms: int | None = None
    words: tuple[WireWord, ...] | None = None


class TurnContinuation(_ServerMessage):
    """The speaker went on: the pending candidate is void."""

    type: Literal["turn_continuation"] = "turn_continuation"


class TurnEnd(_ServerMessage):
    """Confirms the last candidate; the turn is committed."""

    type: Literal["turn_end"] = "turn_end"


class ErrorFrame(_ServerMessage):
    """An in-band error (undocumented; tolerated per the protocol page)."""

    type: Literal["error"] = "error"
    code: str | None = None
    message: str | None = None


ServerMessage = (
    Transcript
    | FlushConfirmation
    | TurnStart
    | TurnEndCandidate
    | TurnContinuation
    | TurnEnd
    | ErrorFrame
)
_BY_TYPE: dict[str, type[_ServerMessage]] = {
    "transcript": Transcript,
    "flush_confirmation": FlushConfirmation,
    "turn_start": TurnStart,
    "turn_end_candidate": TurnEndCandidate,
    "turn_continuation": TurnContinuation,
    "turn_end": TurnEnd,
    "error": ErrorFrame,
}


def parse_server_message(frame: str | bytes) -> ServerMessage | None:
    """Parse one frame from the server.

    Returns ``None`` for binary frames and unknown types (callers ignore them).
    Raises :class:`MalformedMessage` for text that is not a JSON object with a
    known type's required fields.
    """
    if isinstance(frame, bytes):
        return None
    data = _json_object(frame)
    model = _BY_TYPE.get(str(data.get("type")))
    if model is None:
        return None
    try:
        message: ServerMessage = model.model_validate(data)  # type: ignore[assignment]
    except ValidationError as exc:
        raise MalformedMessage(f"invalid {data['type']} message: {exc.errors()[0]['msg']}") from exc
    return message


def parse_client_message(frame: str) -> FlushRequest | None:
    """Parse a client text frame; ``None`` for unknown types.

    Raises :class:`MalformedMessage` for text that is not a JSON object.
    """
    data = _json_object(frame)
    if data.get("type") != "flush_request":
        return None
    try:
        return FlushRequest.model_validate(data)
    except ValidationError as exc:
        raise MalformedMessage(f"invalid flush_request: {exc.errors()[0]['msg']}") from exc


def _json_object(frame: str) -> dict[str, Any]:
    try:
        data = json.loads(frame)
    except ValueError as exc:
        raise MalformedMessage("frame is not JSON") from exc
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise MalformedMessage("frame is not a JSON object with a string 'type'")
    return data


# --------------------------------------------------------------------------- errors / auth

ErrorCode = Literal[
    "INVALID_REQUEST",
    "UNAUTHORIZED",
    "PAYMENT_REQUIRED",
    "NOT_FOUND",
    "PAYLOAD_TOO_LARGE",
    "TOO_MANY_REQUESTS",
    "INTERNAL_ERROR",
]
STATUS_CODES: dict[int, ErrorCode] = {
    400: "INVALID_REQUEST",
    401: "UNAUTHORIZED",
    402: "PAYMENT_REQUIRED",
    404: "NOT_FOUND",
    413: "PAYLOAD_TOO_LARGE",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_ERROR",
}


class ErrorBody(_Model):
    """A refusal body. ``code`` is upper-cased on parse (matched case-insensitively)."""

    code: str
    detail: str | None = None

    @field_validator("code")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @classmethod
    def for_status(cls, status: int, detail: str | None = None) -> ErrorBody:
        """The body the emulator sends with a refusal of ``status``."""
        return cls(code=STATUS_CODES.get(status, "INTERNAL_ERROR"), detail=detail)

    @classmethod
    def parse(cls, body: bytes, header_message: str | None = None) -> ErrorBody | None:
        """Read a refusal from either variant (JSON body, or ``X-Error-Message``).

        Returns ``None`` when neither carries anything usable.
        """
        try:
            return cls.model_validate_json(body)
        except ValidationError:
            pass
        if header_message:
            return cls(code="UNKNOWN", detail=header_message)
        return None


class TokenResponse(_Model):
    """``POST /v1/auth/token`` answer."""

    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
