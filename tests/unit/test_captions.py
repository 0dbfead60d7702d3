"""The caption renderer of ``tail`` and the demo (pure: events in, text out)."""

from __future__ import annotations

import json

import pytest

from schemas.events import SessionEvent, TranscriptEvent, TurnEvent
from workers.tools.captions import CaptionRenderer, json_line, timestamp


def transcript(text: str, final: bool, start_ms: int = 1500, **kw: object) -> TranscriptEvent:
    return TranscriptEvent(
        event_id="e", session_id="s1", is_final=final, text=text, start_ms=start_ms, **kw
    )


def turn(kind: str, index: int = 0, text: str | None = None) -> TurnEvent:
    return TurnEvent.model_validate(
        {
            "event_id": "t",
            "session_id": "s1",
            "type": kind,
            "turn_index": index,
            "text": text,
            "start_ms": 0,
        }
    )


@pytest.mark.parametrize(
    ("ms", "text"),
    [(None, "[--:--.-]"), (0, "[00:00.0]"), (1500, "[00:01.5]"), (61_250, "[01:01.2]")],
)
def test_timestamp(ms: int | None, text: str) -> None:
    assert timestamp(ms) == text


def test_plain_output_commits_finals_only() -> None:
    r = CaptionRenderer(tty=False)
    assert r.feed(transcript("hel", final=False)) == ""
    assert r.feed(transcript("hello world", final=True)) == "[00:01.5] s1: hello world\n"
    assert r.close() == ""


def test_tty_rewrites_the_interim_then_commits_the_final() -> None:
    r = CaptionRenderer(tty=True)
    first = r.feed(transcript("hel", final=False))
    assert first == "[00:01.5] s1: hel …"
    second = r.feed(transcript("hello wor", final=False))
    assert second.startswith("\r\x1b[2K")  # erase the line, write it again
    assert second.endswith("hello wor …")
    final = r.feed(transcript("hello world", final=True))
    assert final.startswith("\r\x1b[2K")
    assert final.endswith("\n")  # committed; no live line left
    assert "hello world" in final
    assert r.close() == ""


def test_a_final_for_another_stream_keeps_the_live_line_below() -> None:
    r = CaptionRenderer(tty=True)
    r.feed(transcript("typing", final=False))
    other = TranscriptEvent(
        event_id="x",
        session_id="s2",
        channel=1,
        label="caller",
        is_final=True,
        text="hi",
        start_ms=0,
    )
    out = r.feed(other)
    committed, _, live = out.partition("\n")
    assert "s2 caller:" in committed
    assert live.endswith("typing …")  # redrawn under the committed line
    assert r.close() == "\r\x1b[2K"


def test_live_line_never_wraps() -> None:
    r = CaptionRenderer(tty=True, width=40)
    out = r.feed(transcript("word " * 50, final=False))
    assert len(out) <= 39


def test_turns_are_marked() -> None:
    r = CaptionRenderer(tty=False)
    assert r.feed(turn("turn_start", 1)) == "── s1 turn 2 ──\n"
    assert r.feed(turn("turn_end_candidate", 1, "so far")) == ""
    assert r.feed(turn("turn_end", 1, "all done")) == "[00:00.0] s1: all done  ⏎ turn end\n"


def test_session_events_are_dimmed_on_a_tty_only() -> None:
    ended = SessionEvent(
        event_id="z",
        session_id="s1",
        type="session_ended",
        audio_seconds=3.25,
        finals=2,
        reconnects=0,
    )
    plain = CaptionRenderer(tty=False).feed(ended)
    assert plain == "· s1 session_ended (3.2 s audio, 2 finals, 0 reconnects)\n"
    assert CaptionRenderer(tty=True).feed(ended).startswith("\x1b[2m")
    failed = SessionEvent(
        event_id="f", session_id="s1", type="session_failed", code="X", detail="bad"
    )
    assert "session_failed (X: bad)" in CaptionRenderer(tty=False).feed(failed)


def test_json_line_is_the_event_plus_topic() -> None:
    event = transcript("hi", final=True)
    data = json.loads(json_line("p.stt.transcripts", event))
    assert data["topic"] == "p.stt.transcripts"
    assert data["text"] == "hi"
    assert data["is_final"] is True
    assert data["session_id"] == "s1"
