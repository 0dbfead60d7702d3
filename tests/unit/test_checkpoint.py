"""Checkpoint: the one representation of where a new owner resumes a session.

Round trip through the bytes stored on ``stt.checkpoints``; entries written by
the previous version (flat ``resume_byte``/``resume_frame``/``header``) read
into ``restart``; ``closed``; ``same_position`` ignoring the write time.
"""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import ValidationError

from schemas.envelope import SessionConfig
from workers.checkpoint import Checkpoint, StreamCheckpoint
from workers.restart import RestartPoint

WAV = SessionConfig(encoding="auto")
RAW = SessionConfig(encoding="pcm_s16le", sample_rate=8000)
HEADER = b"RIFF\x24\x00\x00\x00WAVEfmt "


def checkpoint(**changes: object) -> Checkpoint:
    fields: dict[str, object] = {
        "session_id": "call-1",
        "partition": 4,
        "offset": 17,
        "record_byte": 320,
        "restart": RestartPoint(byte=44, frame=1600, header=HEADER),
        "config": WAV,
        "config_start_ms": 2500,
        "streams": (StreamCheckpoint(covered=48000, turn_index=2, flush_seq=3, finals=4),),
        "prior_finals": 1,
        "prior_reconnects": 2,
        "updated_at": 1_700_000_000.5,
    }
    fields.update(changes)
    return Checkpoint.model_validate(fields)


def test_a_checkpoint_survives_the_round_trip_through_bytes() -> None:
    original = checkpoint()
    assert Checkpoint.from_bytes(original.to_bytes()) == original


@pytest.mark.parametrize("state", ["open", "ended", "failed"])
def test_every_state_survives_the_round_trip(state: str) -> None:
    original = checkpoint(state=state, restart=RestartPoint(), streams=())
    assert Checkpoint.from_bytes(original.to_bytes()) == original


def test_the_stored_header_is_base64_text() -> None:
    stored = json.loads(checkpoint().to_bytes())
    assert base64.b64decode(stored["restart"]["header"]) == HEADER


def test_a_version_1_entry_reads_into_the_restart_point() -> None:
    # as version 1 wrote it: defaults left out (so no "version"), flat fields
    old = {
        "session_id": "call-1",
        "partition": 4,
        "offset": 17,
        "record_byte": 320,
        "resume_byte": 44,
        "resume_frame": 1600,
        "header": base64.b64encode(HEADER).decode(),
        "config": {"encoding": "pcm_s16le", "sample_rate": 8000},
        "streams": [{"covered": 48000, "finals": 4}],
    }
    read = Checkpoint.from_bytes(json.dumps(old).encode())
    assert read.version == 2
    assert read.restart == RestartPoint(byte=44, frame=1600, header=HEADER)
    assert (read.offset, read.record_byte, read.config) == (17, 320, RAW)
    assert read.streams == (StreamCheckpoint(covered=48000, finals=4),)


def test_a_version_1_closed_entry_stays_closed() -> None:
    old = {
        "version": 1,
        "session_id": "s",
        "partition": 0,
        "offset": 9,
        "state": "ended",
        "config": {},
    }
    read = Checkpoint.from_bytes(json.dumps(old).encode())
    assert read.closed
    assert read.restart == RestartPoint()


def test_an_entry_of_an_unknown_version_is_refused() -> None:
    with pytest.raises(ValidationError):
        Checkpoint.from_bytes(b'{"version": 3, "session_id": "s", "partition": 0, "offset": 1}')


@pytest.mark.parametrize(("state", "closed"), [("open", False), ("ended", True), ("failed", True)])
def test_closed_means_ended_or_failed(state: str, closed: bool) -> None:
    assert checkpoint(state=state).closed is closed


def test_same_position_ignores_the_write_time() -> None:
    assert checkpoint(updated_at=1.0).same_position(checkpoint(updated_at=2.0))


@pytest.mark.parametrize(
    "change",
    [
        {"offset": 18},
        {"record_byte": 321},
        {"restart": RestartPoint(byte=45, frame=1600, header=HEADER)},
        {"streams": (StreamCheckpoint(covered=48001, turn_index=2, flush_seq=3, finals=4),)},
        {"state": "ended"},
    ],
    ids=["offset", "record byte", "restart", "coverage", "state"],
)
def test_same_position_sees_any_other_change(change: dict[str, object]) -> None:
    assert not checkpoint().same_position(checkpoint(**change))


def test_nothing_is_the_same_position_as_no_checkpoint() -> None:
    assert not checkpoint().same_position(None)
