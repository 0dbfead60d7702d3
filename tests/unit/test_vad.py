"""SilenceTracker: trailing silence of tones and silence, any split (no I/O)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from emulator.tones import synthesize
from workers.vad import SilenceTracker

RATE = 16000


def silence(ms: int) -> bytes:
    return b"\x00\x00" * (RATE * ms // 1000)


def test_silence_after_speech_is_measured_and_speech_resets_it() -> None:
    word = synthesize([["alpha"]], pause_ms=0, lead_ms=0)
    tracker = SilenceTracker(RATE)
    tracker.feed(silence(500))
    assert tracker.trailing_ms == 500
    tracker.feed(word)
    assert tracker.trailing_ms < 30  # the tone's fade-out ramp
    tracker.feed(silence(300))
    assert 300 <= tracker.trailing_ms <= 330


@given(st.lists(st.integers(1, 5000), min_size=1, max_size=20))
def test_any_split_gives_the_same_answer(cuts: list[int]) -> None:
    audio = synthesize([["bravo"], ["charlie"]], pause_ms=400) + silence(250)
    whole = SilenceTracker(RATE)
    whole.feed(audio)
    pieces = SilenceTracker(RATE)
    at = 0
    for cut in cuts:
        pieces.feed(audio[at : at + cut])
        at += cut
    pieces.feed(audio[at:])
    assert pieces.trailing_ms == whole.trailing_ms


def test_mulaw_is_decoded_before_measuring() -> None:
    loud = bytes([0x00, 0x80]) * 800  # G.711 codes of full-scale -/+ samples, 200 ms
    quiet = b"\xff" * 1600  # the code of 0, 200 ms (as raw bytes it is loud)
    tracker = SilenceTracker(8000, "mulaw")
    tracker.feed(loud + quiet)
    assert tracker.trailing_ms == 200
