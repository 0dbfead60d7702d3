"""Sans-I/O emulator sessions (emulator.protocol), driven by the ``tones`` recognizer."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.errors import DecodeError
from emulator.protocol import (
    CLOSE_INVALID_DATA,
    Close,
    Connection,
    Drop,
    Hang,
    RealtimeSession,
    Send,
    TurnsSession,
    create_session,
    turn_silence_ms,
)
from emulator.recognizers import create_recognizer
from emulator.tones import expected_finals, synthesize
from schemas.wire import StreamParams

UTTERANCES = [["alpha", "bravo"], ["charlie"], ["delta", "echo", "foxtrot"]]
AUDIO = synthesize(UTTERANCES)
EXPECTED = expected_finals(UTTERANCES)


def _params(endpoint: str = "realtime", **flags: str) -> StreamParams:
    return StreamParams.from_query(endpoint, flags)


def _realtime(**flags: str) -> RealtimeSession:
    params = _params(**flags)
    return RealtimeSession(params, create_recognizer("tones", language=params.language or None))


def _turns(**flags: str) -> TurnsSession:
    return TurnsSession(_params("turns", **flags), create_recognizer("tones"))


def _decode(frames: list[str]) -> list[dict[str, Any]]:
    return [json.loads(frame) for frame in frames]


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# --------------------------------------------------------------------------- realtime


def test_realtime_plain_finals_have_only_type_and_text() -> None:
    frames = _decode(_realtime().feed(AUDIO))
    assert frames == [{"type": "transcript", "text": text} for text, _, _ in EXPECTED]


def test_realtime_interims_carry_is_final_false_and_finals_true() -> None:
    frames = _decode(_realtime(include_interim="true").feed(AUDIO))
    interims = [f for f in frames if f["is_final"] is False]
    finals = [f for f in frames if f["is_final"] is True]
    assert interims
    assert len(interims) + len(finals) == len(frames)
    assert [f["text"] for f in finals] == [text for text, _, _ in EXPECTED]
    # Each utterance's interims are prefixes of its final (revisions of one segment).
    assert interims[0]["text"] == "alpha"


def test_realtime_all_flags() -> None:
    session = _realtime(
        include_timestamps="true",
        include_words="true",
        include_confidence="true",
        include_language="true",
        diarize="true",
    )
    first = _decode(session.feed(AUDIO))[0]
    text, start, duration = EXPECTED[0]
    assert first["text"] == text
    assert (first["start_ms"], first["duration_ms"]) == (start, duration)
    assert first["language"] == "en"
    assert first["speaker_id"] == 0
    assert "is_final" not in first
    assert [w["text"] for w in first["words"]] == ["alpha", "bravo"]
    assert first["words"][0]["start_ms"] == start
    assert all(0 < w["confidence"] <= 1 for w in first["words"])


def test_realtime_words_without_timestamps_or_confidence_are_text_only() -> None:
    first = _decode(_realtime(include_words="true").feed(AUDIO))[0]
    assert first == {
        "type": "transcript",
        "text": "alpha bravo",
        "words": [{"text": "alpha"}, {"text": "bravo"}],
    }


def test_realtime_language_follows_the_requested_code() -> None:
    first = _decode(_realtime(include_language="true", language="nl").feed(AUDIO))[0]
    assert first["language"] == "nl"


@pytest.mark.parametrize("request_id", ["abc", None])
def test_realtime_flush_finalizes_then_confirms(request_id: str | None) -> None:
    session = _realtime()
    cut = (EXPECTED[0][1] + EXPECTED[0][2] + 50) * 32  # 50 ms after the first utterance
    assert session.feed(AUDIO[:cut]) == []  # not endpointed yet: 300 ms of silence needed
    frames = _decode(session.flush(request_id))
    assert frames == [
        {"type": "transcript", "text": "alpha bravo"},
        {"type": "flush_confirmation", "id": request_id},
    ]
    assert _decode(session.flush("again")) == [{"type": "flush_confirmation", "id": "again"}]


# --------------------------------------------------------------------------- turns

_TURN_ORDER = re.compile(r"S C(?: N C)* E")
_ABBREV = {
    "turn_start": "S",
    "turn_end_candidate": "C",
    "turn_continuation": "N",
    "turn_end": "E",
    "flush_confirmation": "F",
}


def _shape(frames: list[dict[str, Any]]) -> str:
    return " ".join(_ABBREV[f["type"]] for f in frames)


def test_turns_default_thresholds_make_one_turn_with_continuations() -> None:
    # Pauses of 600 ms: past eager (500 ms) but not final (836 ms).
    session = _turns()
    frames = _decode(session.feed(AUDIO)) + _decode(session.flush("f"))
    assert _shape(frames) == "S C N C N C E F"
    candidates = [f["text"] for f in frames if f["type"] == "turn_end_candidate"]
    assert candidates == [
        "alpha bravo",
        "alpha bravo charlie",
        "alpha bravo charlie delta echo foxtrot",
    ]


def test_turns_long_pauses_end_each_turn() -> None:
    audio = synthesize(UTTERANCES, pause_ms=1000)
    frames = _decode(_turns().feed(audio))
    assert _shape(frames) == "S C E S C E S C E"
    assert frames[1] == {"type": "turn_end_candidate", "text": "alpha bravo"}


def test_turns_candidate_fields_follow_flags_without_confidence() -> None:
    audio = synthesize([["alpha", "bravo"]], pause_ms=1000)
    frames = _decode(
        _turns(include_timestamps="true", include_words="true", include_language="true").feed(audio)
    )
    candidate = frames[1]
    assert candidate == {
        "type": "turn_end_candidate",
        "text": "alpha bravo",
        "language": "en",
        "start_ms": 200,
        "duration_ms": 500,
        "words": [
            {"text": "alpha", "start_ms": 200, "duration_ms": 200},
            {"text": "bravo", "start_ms": 500, "duration_ms": 200},
        ],
    }
    assert frames[0] == {"type": "turn_start"}
    assert frames[2] == {"type": "turn_end"}


def test_turns_flush_finishes_a_turn_in_progress() -> None:
    session = _turns()
    assert _shape(_decode(session.feed(AUDIO[: 650 * 32]))) == "S"  # inside "bravo"
    frames = _decode(session.flush(None))
    assert _shape(frames) == "C E F"
    assert frames[0]["text"] == "alpha bravo"
    assert frames[-1] == {"type": "flush_confirmation", "id": None}


def test_turns_flush_without_a_turn_only_confirms() -> None:
    assert _decode(_turns().flush("x")) == [{"type": "flush_confirmation", "id": "x"}]


def test_eager_equal_to_final_ends_right_after_the_candidate() -> None:
    session = _turns(eager_turn_probability="0.9", final_turn_probability="0.9")
    assert _shape(_decode(session.feed(synthesize([["golf"]], pause_ms=900)))) == "S C E"


@pytest.mark.parametrize(
    ("probability", "expected"),
    [(0.0, 300), (0.25, 372), (0.5, 473), (0.92, 931), (0.999, 2027), (1.0, 2027)],
)
def test_turn_silence_mapping(probability: float, expected: int) -> None:
    assert turn_silence_ms(probability, 300) == expected


@given(st.floats(0, 1), st.floats(0, 1), st.integers(0, 1000))
def test_turn_silence_mapping_is_monotonic(a: float, b: float, end_ms: int) -> None:
    low, high = sorted((a, b))
    assert end_ms <= turn_silence_ms(low, end_ms) <= turn_silence_ms(high, end_ms)


def test_session_thresholds_use_the_mapping() -> None:
    session = _turns(eager_turn_probability="0.1", final_turn_probability="0.6")
    assert (session.eager_ms, session.final_ms) == (326, 529)


# --------------------------------------------------------------------------- splits


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, len(AUDIO)), max_size=30))
def test_any_split_gives_identical_frames(cuts: list[int]) -> None:
    for endpoint, flags in (
        ("realtime", {"include_interim": "true", "include_timestamps": "true"}),
        ("turns", {"include_timestamps": "true"}),
    ):
        whole = create_session(_params(endpoint, **flags), create_recognizer("tones"))
        split = create_session(_params(endpoint, **flags), create_recognizer("tones"))
        expected = whole.feed(AUDIO) + whole.flush("end")
        got = [frame for chunk in _chunks(AUDIO, cuts) for frame in split.feed(chunk)]
        assert got + split.flush("end") == expected


# --------------------------------------------------------------------------- connection


class _Pcm:
    """Stand-in decoder: 16 kHz mono in, out unchanged; b"bad" is undecodable."""

    closed = False

    def feed(self, data: bytes) -> bytes:
        if data == b"bad":
            raise DecodeError("not audio")
        return data

    def close(self) -> None:
        self.closed = True


def _connection(**faults: int | None) -> Connection:
    session = create_session(_params(include_timestamps="true"), create_recognizer("tones"))
    return Connection(session, _Pcm(), **faults)


def _sent(actions: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(a.frame) for a in actions if isinstance(a, Send)]


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(0, len(AUDIO)), max_size=20))
def test_drop_after_is_deterministic_in_audio_time(cuts: list[int]) -> None:
    connection = _connection(drop_after_ms=1400)
    actions = [a for chunk in _chunks(AUDIO, cuts) for a in connection.receive_bytes(chunk)]
    assert actions[-1] == Drop(None)
    assert Drop(None) not in actions[:-1]
    assert connection.audio_ms == 1400
    # Only utterance 1 is endpointed inside the first 1400 ms.
    assert [f["text"] for f in _sent(actions)] == ["alpha bravo"]
    assert connection.receive_bytes(b"\0\0") == []


def test_drop_with_a_close_code_and_hang() -> None:
    dropping = _connection(drop_after_ms=100, drop_close_code=4000)
    assert dropping.receive_bytes(AUDIO) == [Drop(4000)]
    hanging = _connection(hang_after_ms=100, drop_after_ms=200)
    assert hanging.receive_bytes(AUDIO) == [Hang()]
    assert hanging.receive_text('{"type":"flush_request"}') == []


def test_undecodable_audio_and_malformed_text_close_with_1007() -> None:
    connection = _connection()
    [action] = connection.receive_bytes(b"bad")
    assert isinstance(action, Close)
    assert action.code == CLOSE_INVALID_DATA
    assert "not audio" in action.reason
    [action] = _connection().receive_text("{not json")
    assert action == Close(CLOSE_INVALID_DATA, "malformed text frame")


def test_unknown_text_types_are_ignored_and_flush_is_answered() -> None:
    connection = _connection()
    assert connection.receive_text('{"type": "keepalive"}') == []
    assert _sent(connection.receive_text('{"type": "flush_request", "id": "7"}')) == [
        {"type": "flush_confirmation", "id": "7"}
    ]


def test_close_releases_the_decoder_once() -> None:
    decoder = _Pcm()
    connection = Connection(create_session(_params(), create_recognizer("tones")), decoder)
    connection.close()
    connection.close()
    assert decoder.closed
    assert connection.receive_bytes(AUDIO) == []
