"""The input envelope: ``stt.audio`` record headers (ARCHITECTURE.md, "Input").

Parse a record's headers with :func:`parse_headers`; it raises
:class:`BadHeader` (``code`` and ``detail`` for the dead-letter topic) for
anything malformed or contradictory. Configuration headers are read from the
first record of a session; :meth:`SessionConfig.with_overrides` applies a later
record's headers and tells whether they changed the configuration.

One scheme for Reson8's query parameters (issue 14): each documented
parameter has a header named after it, ``stt-`` plus the name with ``-`` for
``_`` (``stt-eager-turn-probability``, ``stt-max-speakers``, ``stt-patterns``,
``stt-filler-mode``, ``stt-phrases``, ``stt-bias-strength``...; see
:data:`CONFIG_HEADERS`); booleans stay in ``stt-options``. A parameter this
version does not know goes as ``stt-param-<name>: <value>`` and reaches the
upstream query unchanged, validated for safety only
(:func:`schemas.wire.check_extra`: name ``[a-z][a-z0-9_]{0,63}``, printable
ASCII value of at most 1024 characters, at most 16 of them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from schemas.wire import (
    LANGUAGES,
    REALTIME_ONLY,
    Encoding,
    Endpoint,
    FillerMode,
    InvalidParameter,
    StreamParams,
    check_extra,
    split_patterns,
)

Kind = Literal["audio", "flush", "end"]
ChannelMode = Literal["mixed", "split"]
CONFIG_HEADERS: dict[str, str] = {
    "stt-encoding": "encoding",
    "stt-sample-rate": "sample_rate",
    "stt-channels": "channels",
    "stt-endpoint": "endpoint",
    "stt-language": "language",
    "stt-options": "options",
    "stt-custom-model-id": "custom_model_id",
    "stt-channel-mode": "channel_mode",
    "stt-channel-labels": "channel_labels",
    "stt-eager-turn-probability": "eager_turn_probability",
    "stt-final-turn-probability": "final_turn_probability",
    "stt-max-speakers": "max_speakers",
    "stt-patterns": "patterns",
    "stt-filler-mode": "filler_mode",
    "stt-phrases": "phrases",
    "stt-bias-strength": "bias_strength",
}
PARAM_PREFIX = "stt-param-"
"""``stt-param-<name>``: a Reson8 query parameter this version does not know."""
_FLOAT_FIELDS = frozenset({"eager_turn_probability", "final_turn_probability", "bias_strength"})
_INT_FIELDS = frozenset({"sample_rate", "channels", "max_speakers"})
_LIST_FIELDS = frozenset({"language", "channel_labels", "phrases"})
_PARAMETER_FIELDS = (
    "eager_turn_probability",
    "final_turn_probability",
    "max_speakers",
    "patterns",
    "filler_mode",
    "phrases",
    "bias_strength",
)
# Flags a producer may put in stt-options (Reson8 boolean query parameters).
OPTION_FLAGS: frozenset[str] = frozenset(
    {
        "include_words",
        "include_timestamps",
        "include_language",
        "include_confidence",
        "include_interim",
        "diarize",
    }
)


class BadHeader(ValueError):
    """A header is malformed or contradicts another; the record goes to the DLQ."""

    def __init__(self, detail: str, code: str = "bad_header") -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class SessionConfig(BaseModel):
    """A session's configuration, from its first record's headers.

    ``encoding='auto'`` means a container the worker demuxes and decodes; the
    upstream always gets an explicit encoding (see :meth:`upstream_params`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    encoding: Encoding = "auto"
    sample_rate: int = 16000
    channels: int = 1
    endpoint: Endpoint = "realtime"
    language: tuple[str, ...] = ()
    options: frozenset[str] = frozenset()
    custom_model_id: str | None = None
    channel_mode: ChannelMode = "mixed"
    channel_labels: tuple[str, ...] = ()
    eager_turn_probability: float | None = None
    final_turn_probability: float | None = None
    max_speakers: int | None = None
    patterns: tuple[str, ...] = ()
    filler_mode: FillerMode | None = None
    phrases: tuple[str, ...] = ()
    bias_strength: float | None = None
    extra: tuple[tuple[str, str], ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> SessionConfig:
        unknown = sorted(self.options - OPTION_FLAGS)
        if unknown:
            raise ValueError(f"stt-options: unknown flag {unknown[0]!r}")
        if self.endpoint == "turns" and self.options & REALTIME_ONLY:
            flag = sorted(self.options & REALTIME_ONLY)[0]
            raise ValueError(f"stt-options: {flag} is not accepted by the turns endpoint")
        bad = [code for code in self.language if code not in LANGUAGES]
        if bad:
            raise ValueError(f"stt-language: unsupported language code {bad[0]!r}")
        if self.channel_labels and self.channel_mode != "split":
            raise ValueError("stt-channel-labels needs stt-channel-mode: split")
        if self.encoding != "auto" and self.channel_mode == "split" and self.channels < 2:
            raise ValueError("stt-channel-mode split needs stt-channels >= 2 for raw audio")
        if self.max_speakers is not None and "diarize" not in self.options:
            # Reson8 docs: max_speakers is "only used when diarize=true".
            raise ValueError("stt-max-speakers needs diarize in stt-options")
        return self

    def label(self, channel: int) -> str | None:
        """The label of ``channel`` in split mode (``None`` when not labelled)."""
        if channel < len(self.channel_labels):
            return self.channel_labels[channel]
        return None

    def upstream_params(self, encoding: Encoding, sample_rate: int, channels: int) -> StreamParams:
        """Query parameters of one upstream connection, always with an explicit encoding.

        Timestamps are always requested: the worker needs them to rebase times
        and to track which audio is covered by finals.
        """
        flags = {name: True for name in self.options}
        flags["include_timestamps"] = True
        values: dict[str, Any] = {
            "endpoint": self.endpoint,
            "encoding": encoding,
            "sample_rate": sample_rate,
            "channels": channels,
            "language": self.language,
            "custom_model_id": self.custom_model_id,
            **self._parameters(),
            **flags,
        }
        try:
            return StreamParams.model_validate(values)
        except ValidationError as exc:
            raise BadHeader(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")) from exc

    def _parameters(self) -> dict[str, Any]:
        """The documented query parameters set by headers, plus the pass-through."""
        values = {name: getattr(self, name) for name in _PARAMETER_FIELDS}
        values = {name: value for name, value in values.items() if value not in (None, ())}
        return {**values, "extra": self.extra}

    def with_overrides(self, headers: Mapping[str, str]) -> SessionConfig:
        """This config with a later record's configuration headers applied.

        ``stt-param-*`` headers of the later record replace the whole set.
        """
        values = self.model_dump()
        values.update(_config_values(headers))
        return _validated(values)


class RecordHeaders(BaseModel):
    """Everything an ``stt.audio`` record's headers say."""

    model_config = ConfigDict(frozen=True)

    kind: Kind = "audio"
    seq: int | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    config_headers: dict[str, str] = {}

    @property
    def has_config(self) -> bool:
        """True when the record carries any configuration header."""
        return bool(self.config_headers)

    def session_config(self) -> SessionConfig:
        """The configuration these headers define on their own (first record)."""
        return _validated(_config_values(self.config_headers))


def decode_headers(raw: Iterable[tuple[str, bytes]] | Mapping[str, bytes]) -> dict[str, str]:
    """Kafka headers as a dict of lower-case names to ASCII strings (last one wins).

    Raises :class:`BadHeader` for a non-ASCII value.
    """
    items = raw.items() if isinstance(raw, Mapping) else raw
    out: dict[str, str] = {}
    for name, value in items:
        try:
            out[name.lower()] = value.decode("ascii").strip() if value is not None else ""
        except UnicodeDecodeError:
            raise BadHeader(f"header {name} is not ASCII") from None
    return out


def parse_headers(headers: Mapping[str, str]) -> RecordHeaders:
    """Parse decoded headers; raises :class:`BadHeader` when malformed."""
    kind = headers.get("stt-kind", "audio") or "audio"
    if kind not in ("audio", "flush", "end"):
        raise BadHeader(f"stt-kind: unknown kind {kind!r}")
    seq = _int_header(headers, "stt-seq")
    config = {
        name: value
        for name, value in headers.items()
        if name in CONFIG_HEADERS or name.startswith(PARAM_PREFIX)
    }
    parsed = RecordHeaders(
        kind=kind,
        seq=seq,
        traceparent=headers.get("traceparent"),
        tracestate=headers.get("tracestate"),
        config_headers=config,
    )
    parsed.session_config()  # validate now: a bad config header is a bad record
    return parsed


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    if name not in headers:
        return None
    try:
        return int(headers[name], 10)
    except ValueError:
        raise BadHeader(f"{name}: not an integer: {headers[name][:40]!r}") from None


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _config_values(headers: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for header, field in CONFIG_HEADERS.items():
        if header in headers:
            values[field] = _field_value(headers, header, field)
    extra = _extra_params(headers)
    if extra is not None:
        values["extra"] = extra
    return values


def _field_value(headers: Mapping[str, str], header: str, field: str) -> Any:
    raw = headers[header]
    if field in _INT_FIELDS:
        return _int_header(headers, header)
    if field in _FLOAT_FIELDS:
        return _float_header(headers, header)
    if field in _LIST_FIELDS:
        return _split(raw)
    if field == "patterns":
        return split_patterns(raw) if raw.strip() else ()
    if field == "options":
        return frozenset(_split(raw))
    return raw


def _float_header(headers: Mapping[str, str], name: str) -> float:
    raw = headers[name]
    try:
        value = float(raw)
    except ValueError:
        raise BadHeader(f"{name}: not a number: {raw[:40]!r}") from None
    if not math.isfinite(value):
        raise BadHeader(f"{name}: not a finite number")
    return value


def _extra_params(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...] | None:
    """``stt-param-<name>`` headers as pass-through pairs; ``None`` when there are none."""
    pairs = []
    for header in sorted(headers):
        if not header.startswith(PARAM_PREFIX):
            continue
        name = header[len(PARAM_PREFIX) :]
        try:
            check_extra(name, headers[header])
        except InvalidParameter as exc:
            raise BadHeader(f"{header}: {exc.detail}") from None
        pairs.append((name, headers[header]))
    return tuple(pairs) if pairs else None


def _validated(values: dict[str, Any]) -> SessionConfig:
    try:
        config = SessionConfig.model_validate(values)
        encoding = config.encoding if config.encoding != "auto" else "pcm_s16le"
        # Range checks (rate, channels 1..10) are the wire model's.
        config.upstream_params(encoding, config.sample_rate, config.channels)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise BadHeader(f"{where}: {message}" if where else message) from exc
    except InvalidParameter as exc:
        raise BadHeader(str(exc)) from exc
    return config
