"""Pacing, chunking and header math of ``reson8-kafka send`` (no I/O)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.envelope import decode_headers, parse_headers
from workers.tools.plan import (
    Pacer,
    SendOptions,
    TraceContext,
    UsageError,
    chunk_plan,
    config_headers,
    end_headers,
    new_session_id,
    parse_pace,
    record_headers,
    validate_options,
)
from workers.tools.progress import FileProgress, Progress, bar_line


@pytest.mark.parametrize(
    ("text", "speed"), [("realtime", 1.0), ("max", None), ("2x", 2.0), ("0.5x", 0.5)]
)
def test_pace_values(text: str, speed: float | None) -> None:
    assert parse_pace(text) == speed


@pytest.mark.parametrize("text", ["fast", "0x", "x", "-1x", "2", ""])
def test_bad_pace_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="pace must be"):
        parse_pace(text)


def test_pacer_waits_until_the_audio_end_of_the_record() -> None:
    realtime, double = Pacer(1.0), Pacer(2.0)
    assert realtime.delay(0.1, 0.0) == pytest.approx(0.1)
    assert realtime.delay(1.0, 0.4) == pytest.approx(0.6)
    assert realtime.delay(1.0, 1.5) == 0.0  # late: send now, never a negative wait
    assert double.delay(1.0, 0.0) == pytest.approx(0.5)
    assert Pacer(None).delay(100.0, 0.0) == 0.0


def test_container_is_cut_proportionally_to_duration() -> None:
    chunks = chunk_plan(10_000, 1.0, 100)
    assert len(chunks) == 10
    assert [c.end - c.start for c in chunks] == [1000] * 10
    assert chunks[0].audio_end_s == pytest.approx(0.1)
    assert chunks[-1].audio_end_s == pytest.approx(1.0)


def test_raw_audio_chunks_hold_whole_frames() -> None:
    # 16 kHz stereo s16: 4 bytes per frame, 100 ms = 6400 bytes.
    size = 4 * 16000 * 2 + 4 * 123
    chunks = chunk_plan(size, size / 64000, 100, align=4)
    assert all(c.start % 4 == 0 for c in chunks)
    assert chunks[0].end - chunks[0].start == pytest.approx(6400, abs=4)


def test_partial_last_chunk_and_tiny_files() -> None:
    chunks = chunk_plan(1050, 1.05, 100)
    assert len(chunks) == 11
    assert chunks[-1].audio_end_s == pytest.approx(1.05)
    assert chunk_plan(0, 0.0, 100) == []
    assert len(chunk_plan(5, 10.0, 100)) == 5  # never an empty record


@settings(deadline=None)
@given(
    size=st.integers(1, 2_000_000),
    duration=st.floats(0.01, 120),
    chunk_ms=st.integers(10, 10_000),
    align=st.sampled_from([1, 2, 4]),
)
def test_chunks_cover_the_file_once_in_order(
    size: int, duration: float, chunk_ms: int, align: int
) -> None:
    chunks = chunk_plan(size, duration, chunk_ms, align)
    assert chunks[0].start == 0
    assert chunks[-1].end == size
    for before, after in itertools.pairwise(chunks):
        assert before.end == after.start
        assert before.audio_end_s <= after.audio_end_s
    assert all(c.end > c.start for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_config_headers_are_what_the_worker_parses() -> None:
    opts = SendOptions(
        endpoint="realtime",
        language="en",
        options=("include_words", "include_interim"),
        split=True,
        labels=("agent", "caller"),
    )
    parsed = parse_headers(decode_headers(config_headers(opts)))
    config = parsed.session_config()
    assert config.channel_mode == "split"
    assert config.channel_labels == ("agent", "caller")
    assert config.options == frozenset({"include_words", "include_interim"})
    assert config.language == ("en",)


def test_raw_headers_carry_rate_and_channels() -> None:
    headers = dict(config_headers(SendOptions(encoding="mulaw")))
    assert headers["stt-encoding"] == b"mulaw"
    assert headers["stt-sample-rate"] == b"8000"
    assert headers["stt-channels"] == b"1"
    assert SendOptions(encoding="pcm_s16le", channels=2).frame_bytes() == 4


def test_seq_and_trace_on_every_record_config_on_the_first() -> None:
    trace = TraceContext.new()
    first = config_headers(SendOptions())
    h0 = dict(record_headers(0, 0, trace, first))
    h1 = dict(record_headers(1, 1, trace, first))
    end = dict(end_headers(2, trace))
    assert h0["stt-encoding"] == b"auto"
    assert "stt-encoding" not in h1
    assert (h0["stt-seq"], h1["stt-seq"], end["stt-seq"]) == (b"0", b"1", b"2")
    assert end["stt-kind"] == b"end"
    pattern = re.compile(rf"^00-{trace.trace_id}-[0-9a-f]{{16}}-01$")
    spans = {h["traceparent"].decode() for h in (h0, h1, end)}
    assert all(pattern.match(s) for s in spans)
    assert len(spans) == 3  # one trace, a span per record


def test_session_id_is_the_stem_plus_a_suffix() -> None:
    sid = new_session_id(Path("/calls/My call (1).wav"))
    assert re.fullmatch(r"My-call-1-[0-9a-f]{6}", sid)
    assert new_session_id(Path("a.wav")) != new_session_id(Path("a.wav"))


@pytest.mark.parametrize(
    ("opts", "files", "session", "message"),
    [
        (SendOptions(), ["a", "b"], "s", "exactly one FILE"),
        (SendOptions(labels=("a", "b")), ["a"], None, "--labels needs --split"),
        (SendOptions(sample_rate=8000), ["a"], None, "add --encoding"),
        (SendOptions(options=("include_nothing",)), ["a"], None, "unknown flag"),
        (
            SendOptions(endpoint="turns", options=("include_interim",)),
            ["a"],
            None,
            "not accepted by the turns endpoint",
        ),
        (SendOptions(encoding="pcm_s16le", split=True), ["a"], None, "stt-channels >= 2"),
        (SendOptions(language="xx"), ["a"], None, "unsupported language"),
    ],
)
def test_contradicting_options_are_usage_errors(
    opts: SendOptions, files: list[str], session: str | None, message: str
) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        validate_options(opts, [Path(f) for f in files], session)


def test_progress_bar_line() -> None:
    item = FileProgress("call", 10.0, 2.5)
    assert bar_line(item, width=8) == "call  [##......]    2.5/10.0 s   25%"
    item.done, item.sent_s = True, 10.0
    assert bar_line(item, width=8).endswith("done")


class _Stream:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


def test_progress_redraws_in_place_on_a_tty() -> None:
    now = [0.0]
    stream = _Stream()
    items = [FileProgress("a", 1.0), FileProgress("b", 1.0)]
    progress = Progress(items, stream, tty=True, clock=lambda: now[0])  # type: ignore[arg-type]
    progress.update()
    items[0].sent_s = 0.5
    progress.update()  # throttled: same instant
    assert stream.text.count("\n") == 2
    now[0] = 1.0
    progress.update()
    assert "\x1b[2F" in stream.text  # cursor back up over the two bars


def test_progress_without_a_tty_prints_plain_lines() -> None:
    now = [0.0]
    stream = _Stream()
    items = [FileProgress("a", 10.0)]
    progress = Progress(items, stream, tty=False, clock=lambda: now[0])  # type: ignore[arg-type]
    items[0].sent_s = 1.0
    progress.update()
    now[0] = 1.0
    items[0].sent_s = 2.0
    progress.update()  # within the 5 s interval: nothing new
    items[0].done, items[0].sent_s = True, 10.0
    progress.finish()
    progress.finish()  # a finished file is reported once
    assert "\x1b" not in stream.text
    assert stream.text.splitlines()[-1].endswith("done")
    assert len(stream.text.splitlines()) == 2
