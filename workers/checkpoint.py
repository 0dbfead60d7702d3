"""Per-session checkpoints: where a new owner resumes a session after a takeover.

A :class:`Checkpoint` is written to a changelog-backed table (key: session id)
before any record it accounts for is acked, so whenever the committed offset
has passed some of a session's records, the table says how to go on
(ARCHITECTURE.md, "Delivery"):

- records of the session below :attr:`Checkpoint.offset` are done; the first
  one at or above it begins at input byte :attr:`~Checkpoint.record_byte`;
- decoding restarts at input byte :attr:`~Checkpoint.resume_byte` (for
  containers: after feeding :attr:`~Checkpoint.header` to a fresh decoder)
  and its first audio is session frame :attr:`~Checkpoint.resume_frame`;
- per stream, audio before ``covered`` is decoded again but not sent (its
  finals were emitted), and the turn index, flush sequence and counters go on.

``state='ended'`` marks a session whose ``session_ended`` was emitted: its
records below ``offset`` are skipped, and the entry is deleted (tombstoned)
once the committed offset has passed them.

Byte positions count the session's input since its current configuration
began (a configuration change starts a new decoder at byte 0).
"""

from __future__ import annotations

import base64
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from schemas.envelope import SessionConfig


def _from_base64(value: object) -> object:
    return base64.b64decode(value, validate=True) if isinstance(value, str) else value


# Raw bytes in Python, base64 text in JSON.
Base64Bytes = Annotated[
    bytes,
    BeforeValidator(_from_base64),
    PlainSerializer(
        lambda b: base64.b64encode(b).decode("ascii"), return_type=str, when_used="json"
    ),
]


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

    version: Literal[1] = 1
    session_id: str
    partition: int
    state: Literal["open", "ended"] = "open"
    offset: int
    record_byte: int = 0
    resume_byte: int = 0
    resume_frame: int = 0
    header: Base64Bytes = b""
    config: SessionConfig
    config_start_ms: int = 0
    streams: tuple[StreamCheckpoint, ...] = ()
    # finals and reconnects of earlier configurations (session_ended totals)
    prior_finals: int = 0
    prior_reconnects: int = 0
    updated_at: float = 0.0  # wall clock (seconds) of the write, for orphan expiry

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
