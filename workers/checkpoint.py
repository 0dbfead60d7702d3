"""Per-session checkpoints: where a new owner resumes a session after a takeover.

A :class:`Checkpoint` is written to a changelog-backed table (key: session id)
before any record it accounts for is acked, so whenever the committed offset
has passed some of a session's records, the table says how to go on
(ARCHITECTURE.md, "Delivery"):

- records of the session below :attr:`Checkpoint.offset` are done; the first
  one at or above it begins at input byte :attr:`~Checkpoint.record_byte`;
- decoding restarts at :attr:`~Checkpoint.restart` (a
  :class:`~workers.restart.RestartPoint`: the input byte, for containers
  after feeding its header to a fresh decoder, and the session frame of its
  first audio);
- per stream, audio before ``covered`` is decoded again but not sent (its
  finals were emitted), and the turn index, flush sequence and counters go on.

``state='ended'`` marks a session whose ``session_ended`` was emitted and
``state='failed'`` one whose ``session_failed`` was: its records below
``offset`` are skipped, and the entry is deleted (tombstoned) once the
committed offset has passed them. A new owner dead-letters the later records
of a failed session (code ``session_failed``) like the worker that saw it fail.

Byte positions count the session's input since its current configuration
began (a configuration change starts a new decoder at byte 0).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from schemas.envelope import SessionConfig
from workers.restart import RestartPoint

State = Literal["open", "ended", "failed"]


class StreamCheckpoint(BaseModel):
    """One upstream stream's state at the checkpoint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    covered: int  # session frame (upstream rate) up to which finals were emitted
    turn_index: int = 0
    flush_seq: int = 0
    finals: int = 0
    connections: int = 0
    reconnects: int = 0


class Checkpoint(BaseModel):
    """A session's resume state; see the module docstring."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[2] = 2
    session_id: str
    partition: int
    state: State = "open"
    offset: int
    record_byte: int = 0
    restart: RestartPoint = RestartPoint()
    config: SessionConfig
    config_start_ms: int = 0
    streams: tuple[StreamCheckpoint, ...] = ()
    # finals and reconnects of earlier configurations (session_ended totals)
    prior_finals: int = 0
    prior_reconnects: int = 0
    updated_at: float = 0.0  # wall clock (seconds) of the write, for orphan expiry

    @model_validator(mode="before")
    @classmethod
    def _from_version_1(cls, data: Any) -> Any:
        """Version 1 kept the restart point in three flat fields."""
        if isinstance(data, dict) and data.get("version") in (None, 1) and "restart" not in data:
            data = dict(data)
            data["restart"] = {
                "byte": data.pop("resume_byte", 0),
                "frame": data.pop("resume_frame", 0),
                "header": data.pop("header", ""),
            }
            data["version"] = 2
        return data

    @property
    def closed(self) -> bool:
        """The session is over (ended or failed): its records below ``offset`` are done."""
        return self.state != "open"

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_defaults=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        return cls.model_validate_json(data)

    def same_position(self, other: Checkpoint | None) -> bool:
        """True when ``other`` resumes from the same place (ignoring the write time)."""
        return other is not None and self.model_copy(update={"updated_at": 0.0}) == (
            other.model_copy(update={"updated_at": 0.0})
        )
