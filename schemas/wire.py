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
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Endpoint = Literal["realtime", "turns"]
Encoding = Literal["auto", "pcm_s16le", "mulaw", "alaw"]
# Prerecorded also takes explicit seekable containers (Reson8 docs, prerecorded page).
ContainerEncoding = Literal["m4a", "m4v", "mp4", "mov", "3gp", "3g2"]
PrerecordedEncoding = Encoding | ContainerEncoding
FillerMode = Literal["clean", "natural", "verbatim"]
RAW_ENCODINGS: frozenset[str] = frozenset({"pcm_s16le", "mulaw", "alaw"})
CONTAINER_ENCODINGS: frozenset[str] = frozenset({"m4a", "m4v", "mp4", "mov", "3gp", "3g2"})
ENDPOINTS: tuple[Endpoint, ...] = ("realtime", "turns")
LANGUAGES: frozenset[str] = frozenset({"de", "en", "es", "fr", "fy", "it", "nl", "pl", "pt", "sv"})
FILLER_MODES: tuple[FillerMode, ...] = ("clean", "natural", "verbatim")
PATH_PREFIX = "/v1/speech-to-text/"
PRERECORDED_PATH = PATH_PREFIX + "prerecorded"
TOKEN_PATH = "/v1/auth/token"
MAX_PHRASES = 250  # the vendor's newest client and docs: at most 250 phrases

# Parameters only the realtime endpoint accepts (protocol page, query table).
REALTIME_ONLY: frozenset[str] = frozenset(
    {"include_confidence", "include_interim", "diarize", "max_speakers"}
)
TURNS_ONLY: frozenset[str] = frozenset({"eager_turn_probability", "final_turn_probability"})
# What prerecorded refuses: it has no interims and no turns (prerecorded page).
NOT_PRERECORDED: frozenset[str] = frozenset({"include_interim"}) | TURNS_ONLY
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
_FLOAT_PARAMS: frozenset[str] = TURNS_ONLY | {"bias_strength"}
_LIST_PARAMS: frozenset[str] = frozenset({"language", "phrases", "patterns"})
_STR_PARAMS: frozenset[str] = frozenset({"encoding", "custom_model_id", "filler_mode"})
QUERY_PARAMS: frozenset[str] = (
    _BOOL_PARAMS | _INT_PARAMS | _FLOAT_PARAMS | _LIST_PARAMS | _STR_PARAMS
)

DEFAULT_EAGER = 0.5
DEFAULT_FINAL = 0.92

# Pass-through of parameters this version does not know (issue 14): validated
# for safety only, so nothing can break out of the query string or a log line.
EXTRA_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_EXTRA_PARAMS = 16
MAX_EXTRA_VALUE = 1024
MAX_LIST_VALUE = 16 * 1024  # bytes of one comma list (250 phrases of ~60 characters)
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_COMMA_OUTSIDE_BRACES = re.compile(r",(?![^{}]*\})")


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


def split_patterns(raw: str) -> tuple[str, ...]:
    """Split a ``patterns`` value on the commas outside ``{m,n}`` braces.

    ``"AMZ[0-9]{6},[0-9]{4,6}"`` -> ``("AMZ[0-9]{6}", "[0-9]{4,6}")``: a repeat
    range keeps its comma (the vendor's newest client joins patterns that way).
    """
    return tuple(part.strip() for part in _COMMA_OUTSIDE_BRACES.split(raw))


def check_extra(name: str, value: str) -> None:
    """Refuse a pass-through parameter that is unsafe to put in a URL or a log.

    Raises :class:`InvalidParameter`. A name is ``[a-z][a-z0-9_]{0,63}`` and not
    a parameter this version knows (those have their own, typed fields); a
    value is at most 1024 printable ASCII characters.
    """
    if not EXTRA_NAME.fullmatch(name):
        raise InvalidParameter("extra", "a parameter name must match [a-z][a-z0-9_]{0,63}")
    if name in QUERY_PARAMS:
        raise InvalidParameter(name, "a known parameter cannot be passed through")
    if len(value) > MAX_EXTRA_VALUE:
        raise InvalidParameter(name, f"longer than {MAX_EXTRA_VALUE} characters")
    if not _PRINTABLE.fullmatch(value):
        raise InvalidParameter(name, "only printable ASCII is allowed")


class _Params(_Model):
    """What every endpoint's query has in common; see the subclasses."""

    sample_rate: Annotated[int, Field(ge=8000, le=96000)] = 16000
    channels: Annotated[int, Field(ge=1, le=10)] = 1
    language: tuple[str, ...] = ()
    custom_model_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    include_timestamps: bool = False
    include_words: bool = False
    include_language: bool = False
    include_confidence: bool = False
    diarize: bool = False
    max_speakers: Annotated[int, Field(ge=1, le=4)] | None = None
    patterns: tuple[str, ...] = ()
    filler_mode: FillerMode | None = None
    phrases: tuple[str, ...] = ()
    bias_strength: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    extra: tuple[tuple[str, str], ...] = ()

    @field_validator("language")
    @classmethod
    def _known_languages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [code for code in value if code not in LANGUAGES]
        if unknown:
            raise ValueError(f"unsupported language code {unknown[0]!r}")
        return value

    @field_validator("phrases")
    @classmethod
    def _phrase_list(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) > MAX_PHRASES:
            raise ValueError(f"at most {MAX_PHRASES} phrases, got {len(value)}")
        _check_list(value, allow_braced_commas=False)
        return value

    @field_validator("patterns")
    @classmethod
    def _pattern_list(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _check_list(value, allow_braced_commas=True)
        return value

    @field_validator("extra")
    @classmethod
    def _safe_extra(cls, value: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        if len(value) > MAX_EXTRA_PARAMS:
            raise ValueError(f"at most {MAX_EXTRA_PARAMS} pass-through parameters")
        if len({name for name, _ in value}) != len(value):
            raise ValueError("a pass-through parameter is given twice")
        for name, raw in value:
            try:
                check_extra(name, raw)
            except InvalidParameter as exc:
                raise ValueError(str(exc)) from None
        return value

    def _query(self, exclude: set[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        dumped = self.model_dump(exclude_defaults=True, exclude={"extra", *exclude})
        for name, value in dumped.items():
            out[name] = _render(value)
        out.update(self.extra)
        return out

    @property
    def extra_params(self) -> dict[str, str]:
        """The pass-through parameters as a dict (name -> value)."""
        return dict(self.extra)


def _check_list(values: tuple[str, ...], *, allow_braced_commas: bool) -> None:
    if sum(len(v) + 1 for v in values) > MAX_LIST_VALUE:
        raise ValueError(f"longer than {MAX_LIST_VALUE} characters in all")
    for value in values:
        if not value.strip():
            raise ValueError("an entry is empty")
        if not _PRINTABLE.fullmatch(value):
            raise ValueError("only printable ASCII is allowed")
        split = _COMMA_OUTSIDE_BRACES.search(value) if allow_braced_commas else "," in value
        if split:
            raise ValueError(f"an entry would be split at its comma: {value[:40]!r}")


class StreamParams(_Params):
    """The configuration of one streaming connection (all of it is in the URL).

    Build it from a handshake with :meth:`from_query`, or directly in the worker;
    render the URL query with :meth:`to_query`. Validation enforces the
    protocol table: ranges, language codes, per-endpoint flags, eager <= final,
    at most 250 phrases. ``extra`` holds parameters this version does not know
    as ``(name, value)`` pairs (name ``[a-z][a-z0-9_]*``, printable ASCII
    value, at most 16): they are rendered into the query as they are.
    """

    endpoint: Endpoint = "realtime"
    encoding: Encoding = "auto"
    include_interim: bool = False
    eager_turn_probability: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] | None = (
        None
    )
    final_turn_probability: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] | None = (
        None
    )

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

        Unknown parameter names are kept in ``extra`` when they pass
        :func:`check_extra`, else ignored (forward compatibility: the service
        ignores what it does not know). Raises :class:`InvalidParameter` for
        anything the server must refuse with 400.
        """
        if endpoint not in ENDPOINTS:
            raise InvalidParameter("endpoint", f"unknown endpoint {endpoint!r}")
        return _parse(cls, {"endpoint": endpoint}, query)

    def to_query(self) -> dict[str, str]:
        """Render as URL query parameters; defaults are left out except ``encoding``.

        Probabilities render as decimals (``0.3``), lists comma-joined, then the
        ``extra`` pass-through parameters.
        """
        out: dict[str, str] = {"encoding": self.encoding, **self._query({"endpoint"})}
        if self.encoding in RAW_ENCODINGS:
            out["sample_rate"] = str(self.sample_rate)
            out["channels"] = str(self.channels)
        return out

    @property
    def path(self) -> str:
        """URL path of this endpoint, e.g. ``/v1/speech-to-text/realtime``."""
        return PATH_PREFIX + self.endpoint


class PrerecordedParams(_Params):
    """The query of ``POST /v1/speech-to-text/prerecorded`` (Reson8 docs).

    ``encoding`` is ``auto`` (a container, detected), an explicit seekable
    container (``m4a``, ``mp4``, ``mov``...) or a raw encoding with
    ``sample_rate``/``channels``. No interims, no turn probabilities.
    """

    encoding: PrerecordedEncoding = "auto"

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> PrerecordedParams:
        """Parse and validate a prerecorded request's query; raises :class:`InvalidParameter`."""
        for name in sorted(NOT_PRERECORDED & query.keys()):
            raise InvalidParameter(name, "is not accepted by the prerecorded endpoint")
        return _parse(cls, {}, query)

    def to_query(self) -> dict[str, str]:
        """Render as URL query parameters (``encoding`` always, defaults left out)."""
        out: dict[str, str] = {"encoding": self.encoding, **self._query(set())}
        if self.encoding in RAW_ENCODINGS:
            out["sample_rate"] = str(self.sample_rate)
            out["channels"] = str(self.channels)
        return out


_P = TypeVar("_P", bound=_Params)


def _parse(model: type[_P], values: dict[str, Any], query: Mapping[str, str]) -> _P:
    extra: list[tuple[str, str]] = []
    for name, raw in query.items():
        if name in QUERY_PARAMS:
            values[name] = _coerce(name, raw)
        elif len(extra) < MAX_EXTRA_PARAMS and _safe_extra(name, raw):
            extra.append((name, raw))
    values["extra"] = tuple(extra)
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise _invalid_from(exc) from exc


def _safe_extra(name: str, raw: str) -> bool:
    try:
        check_extra(name, raw)
    except InvalidParameter:
        return False
    return True


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
        return _number(name, raw)
    if name == "patterns":
        return split_patterns(raw) if raw.strip() else ()
    if name == "language":  # tolerant: "nl,,en" and a trailing comma are fine
        return tuple(code.strip() for code in raw.split(",") if code.strip())
    if name in _LIST_PARAMS:
        return tuple(part.strip() for part in raw.split(",")) if raw.strip() else ()
    return raw


def _number(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise InvalidParameter(name, "must be a number") from None
    if not math.isfinite(value):
        raise InvalidParameter(name, "must be a finite number")
    return value


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
# The lower_snake codes the vendor's newest client sees (protocol page, 2026-12
# updates); 402 and 429 refuse the session itself.
SNAKE_CODES: dict[int, str] = {
    400: "invalid_request",
    401: "unauthorized",
    402: "session_rejected",
    404: "not_found",
    413: "payload_too_large",
    429: "session_rejected",
    500: "internal_error",
}
ERROR_MESSAGE_HEADER = "X-Error-Message"
_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


class ErrorBody(_Model):
    """A refusal, from either variant the service is seen to send.

    ``code`` is upper-cased on parse, so ``session_rejected`` and
    ``SESSION_REJECTED`` compare equal; ``status`` is the HTTP status when the
    caller gave it. Decide retries by status (400/401/402 permanent, 429 and
    5xx retriable); :attr:`out_of_credits` names the 402 case.
    """

    code: str
    detail: str | None = None
    status: int | None = None

    @field_validator("code")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @property
    def out_of_credits(self) -> bool:
        """402: the account has no credit left (permanent until topped up)."""
        return self.status == 402 or self.code == "PAYMENT_REQUIRED"

    @classmethod
    def for_status(cls, status: int, detail: str | None = None) -> ErrorBody:
        """The body the emulator sends with a refusal of ``status`` (docs' style)."""
        return cls(code=STATUS_CODES.get(status, "INTERNAL_ERROR"), detail=detail)

    @classmethod
    def parse(
        cls, body: bytes, header_message: str | None = None, status: int | None = None
    ) -> ErrorBody | None:
        """Read a refusal from any variant: a JSON body ``{"code", "detail"?}``
        (upper-case or lower_snake code, problem+json ``title``), or an empty
        body with ``X-Error-Message`` (passed as ``header_message``).

        A message that is itself a code (``session_rejected``) becomes the
        code; else the code comes from ``status``. Returns ``None`` when
        nothing usable was sent and no ``status`` was given. Never raises.
        """
        code, detail = _json_refusal(body)
        message = (header_message or "").strip()[:500] or None
        if code is None and message is not None and _CODE.fullmatch(message):
            code = message
        if code is None and status is not None:
            code = STATUS_CODES.get(status, "UNKNOWN")
        if code is None:
            code = "UNKNOWN" if message else None
        if code is None:
            return None
        return cls(code=code, detail=detail or message, status=status)


def _json_refusal(body: bytes) -> tuple[str | None, str | None]:
    """``(code, detail)`` of a JSON refusal body; ``(None, None)`` for anything else."""
    try:
        data = json.loads(body[:65536]) if body.strip() else None
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    code = data.get("code")
    code = code if isinstance(code, str) and _CODE.fullmatch(code) else None
    detail = next(
        (v for k in ("detail", "message", "title") if isinstance(v := data.get(k), str) and v),
        None,
    )
    return code, detail[:500] if detail else None


class TokenResponse(_Model):
    """``POST /v1/auth/token`` answer."""

    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
