"""Output events of the worker (one pydantic model per event family).

Topics (ARCHITECTURE.md, "Output topics"): key = session id, value = JSON.

- ``stt.transcripts``: :class:`TranscriptEvent` (interim and final)
- ``stt.turns``: :class:`TurnEvent` (``turn_start`` ... ``turn_end``)
- ``stt.sessions``: :class:`SessionEvent` (lifecycle)

Times (``start_ms``, ``duration_ms``) are session-absolute: milliseconds of
audio from the first sample of the session (per channel), continuous across
reconnects and worker failovers. ``event_id`` of finals and turn events is
deterministic (see :func:`event_id`), so consumers drop duplicates by it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION: Literal["1"] = "1"


def event_id(session_id: str, channel: int | None, position_ms: int, kind: str) -> str:
    """Deterministic id from (session, channel, session-absolute position, kind).

    The same final or turn event re-emitted after a replay gets the same id.
    """
    raw = json.dumps([session_id, channel, position_ms, kind], separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def utc_now() -> datetime:
    """Wall-clock time of emission (only informative; never used for ordering)."""
    return datetime.now(UTC)


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal["1"] = SCHEMA_VERSION
    event_id: str
    session_id: str
    channel: int | None = Field(
        default=None, description="input channel index in split mode, else null"
    )
    label: str | None = Field(default=None, description="channel label in split mode")
    time: datetime = Field(default_factory=utc_now, description="emission time (UTC)")

    def to_json_bytes(self) -> bytes:
        """Serialize for a Kafka record value."""
        return self.model_dump_json(exclude_none=False).encode()


class Word(BaseModel):
    """One recognised word with session-absolute timing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    start_ms: int | None = None
    duration_ms: int | None = None
    confidence: float | None = None


class TranscriptEvent(_Event):
    """A realtime transcript segment. Interims revise the segment in progress;
    a final replaces every interim before it and is never revised."""

    type: Literal["transcript"] = "transcript"
    is_final: bool
    text: str
    start_ms: int | None = None
    duration_ms: int | None = None
    words: tuple[Word, ...] = ()
    language: str | None = None
    speaker_id: int | None = None


TurnKind = Literal["turn_start", "turn_end_candidate", "turn_continuation", "turn_end"]


class TurnEvent(_Event):
    """A turn-taking event of the ``turns`` endpoint.

    ``turn_index`` counts turns per session and channel from 0. A
    ``turn_end_candidate`` carries the whole turn text so far; a
    ``turn_continuation`` voids it; ``turn_end`` commits the last candidate
    (``text`` repeats the committed text for convenience).
    """

    type: TurnKind
    turn_index: int
    text: str | None = None
    start_ms: int | None = None
    duration_ms: int | None = None
    words: tuple[Word, ...] = ()
    language: str | None = None


SessionKind = Literal[
    "session_started",
    "upstream_connected",
    "upstream_reconnected",
    "flush_confirmed",
    "session_warning",
    "session_ended",
    "session_failed",
]


class SessionEvent(_Event):
    """Session lifecycle. Which optional fields are set depends on ``type``:

    - ``upstream_connected`` / ``upstream_reconnected``: ``endpoint``,
      ``encoding``, ``sample_rate``, ``connection``, ``reason`` (reconnects).
    - ``flush_confirmed``: ``flush_id``, ``position_ms``.
    - ``session_ended``: ``audio_seconds``, ``finals``, ``reconnects``.
    - ``session_failed`` / ``session_warning``: ``code``, ``detail``.
    """

    type: SessionKind
    endpoint: str | None = None
    encoding: str | None = None
    sample_rate: int | None = None
    connection: int | None = None
    reason: str | None = None
    flush_id: str | None = None
    position_ms: int | None = None
    audio_seconds: float | None = None
    finals: int | None = None
    reconnects: int | None = None
    code: str | None = None
    detail: str | None = None


OutputEvent = Annotated[TranscriptEvent | TurnEvent | SessionEvent, Field(discriminator="type")]
OUTPUT_EVENT: TypeAdapter[TranscriptEvent | TurnEvent | SessionEvent] = TypeAdapter(OutputEvent)

CE_TYPE_PREFIX = "dev.reson8.kafka."


def parse_event(value: bytes | str) -> TranscriptEvent | TurnEvent | SessionEvent:
    """Parse an output record's value into its model (for consumers and tests)."""
    return OUTPUT_EVENT.validate_json(value)


def cloudevent_headers(
    event: TranscriptEvent | TurnEvent | SessionEvent, source: str
) -> list[tuple[str, bytes]]:
    """CloudEvents Kafka binary-mode headers for an output record."""
    return [
        ("ce_specversion", b"1.0"),
        ("ce_type", (CE_TYPE_PREFIX + event.type).encode()),
        ("ce_source", source.encode()),
        ("ce_id", event.event_id.encode()),
        ("ce_time", event.time.isoformat().encode()),
        ("content-type", b"application/json"),
    ]


SCHEMA_FILES: dict[str, type[BaseModel]] = {
    "transcript.schema.json": TranscriptEvent,
    "turn.schema.json": TurnEvent,
    "session.schema.json": SessionEvent,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every output event, keyed by file name."""
    return {name: model.model_json_schema() for name, model in SCHEMA_FILES.items()}


def write_json_schemas(folder: Path) -> list[Path]:
    """Write the schema files into ``folder`` (``docs/schemas`` in the repo)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = folder / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
