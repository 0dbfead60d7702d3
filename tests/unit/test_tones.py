"""The deterministic tones recognizer: pure, no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.recognizers import (
    Final,
    Hypothesis,
    Interim,
    RecognizerEvent,
    SpeechStarted,
    Word,
    create_recognizer,
)
from emulator.recognizers.tones import ToneRecognizer
from emulator.tones import VOCABULARY, expected_finals, synthesize

UTTERANCES = [["alpha", "bravo", "alpha", "alpha"], ["juliet"], ["india", "hotel", "charlie"]]
AUDIO = synthesize(UTTERANCES)


def finals(events: list[RecognizerEvent]) -> list[tuple[str, int, int]]:
    return [
        (e.hypothesis.text, e.hypothesis.start_ms, e.hypothesis.duration_ms)
        for e in events
        if isinstance(e, Final)
    ]


def feed_all(audio: bytes, sizes: list[int] | None = None, **options: int) -> list[RecognizerEvent]:
    recognizer = create_recognizer("tones", **options)
    events: list[RecognizerEvent] = []
    offset = 0
    for size in sizes or [len(audio)]:
        events += recognizer.feed(audio[offset : offset + size])
        offset += size
    return events + recognizer.feed(audio[offset:])


def test_synthesized_audio_gives_expected_finals() -> None:
    assert finals(feed_all(AUDIO)) == expected_finals(UTTERANCES)


def test_every_word_of_the_vocabulary() -> None:
    utterances = [list(VOCABULARY), list(reversed(VOCABULARY))]
    layout = {"word_ms": 60, "gap_ms": 10, "pause_ms": 300, "lead_ms": 0}
    audio = synthesize(utterances, **layout)
    assert finals(feed_all(audio)) == expected_finals(utterances, **layout)


def test_event_sequence_per_utterance() -> None:
    events = feed_all(synthesize([["alpha", "bravo"]]))
    first = Word("alpha", 200, 200, 0.98)
    second = Word("bravo", 500, 200, 0.98)
    one = Hypothesis((first,), 200, 200, "en")
    both = Hypothesis((first, second), 200, 500, "en")
    assert events == [SpeechStarted(200), Interim(one), Interim(both), Final(both)]
    assert both.text == "alpha bravo"


def test_final_comes_utterance_end_ms_after_the_last_word() -> None:
    recognizer = create_recognizer("tones", utterance_end_ms=500)
    audio = synthesize([["echo"]], lead_ms=0, pause_ms=600)  # word ends at 200 ms
    assert not any(isinstance(e, Final) for e in recognizer.feed(audio[: 699 * 32]))
    assert recognizer.in_utterance
    assert recognizer.trailing_silence_ms == 490
    assert finals(recognizer.feed(audio[699 * 32 : 700 * 32])) == [("echo", 0, 200)]
    assert not recognizer.in_utterance


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=4000), max_size=40))
def test_any_split_gives_identical_events(sizes: list[int]) -> None:
    assert feed_all(AUDIO, sizes) == feed_all(AUDIO)


@pytest.mark.parametrize("offset_ms", [10, 130, 1500])
def test_instances_started_at_grid_offsets_agree(offset_ms: int) -> None:
    late = finals(feed_all(AUDIO[offset_ms * 32 :]))
    whole = finals(feed_all(AUDIO))
    # 1500 ms is in the pause after the first utterance: only the later ones remain.
    shifted = [(text, start - offset_ms, length) for text, start, length in whole]
    assert late == [f for f in shifted if f[1] >= 0]
    assert len(late) == (2 if offset_ms == 1500 else 3)


def test_flush_mid_utterance_then_the_rest() -> None:
    recognizer = create_recognizer("tones")
    audio = synthesize([["alpha", "bravo", "charlie"]])  # words at 200, 500, 800 ms
    cut = 600 * 32  # in the middle of "bravo"
    events = recognizer.feed(audio[:cut]) + recognizer.flush()
    assert finals(events) == [("alpha bravo", 200, 400)]
    assert not recognizer.in_utterance
    events = recognizer.feed(audio[cut:])
    assert events[0] == SpeechStarted(600)
    assert finals(events) == [("bravo charlie", 600, 400)]


def test_flush_keeps_a_short_run_for_the_next_utterance() -> None:
    recognizer = create_recognizer("tones")
    audio = synthesize([["delta"]], lead_ms=0)
    assert recognizer.feed(audio[: 30 * 32]) == []  # 3 frames: not yet a word
    assert recognizer.flush() == []
    assert finals(recognizer.feed(audio[30 * 32 :])) == [("delta", 0, 200)]


def test_flush_without_speech_and_twice() -> None:
    recognizer = create_recognizer("tones")
    assert recognizer.flush() == []
    recognizer.feed(synthesize([["golf"]], pause_ms=300)[: 300 * 32])
    assert finals(recognizer.flush()) == [("golf", 200, 100)]
    assert recognizer.flush() == []


def test_trailing_silence_and_in_utterance() -> None:
    recognizer = create_recognizer("tones")
    audio = synthesize([["foxtrot"]])  # lead 200, word 200, pause 600
    recognizer.feed(audio[: 100 * 32])
    assert (recognizer.position_ms, recognizer.trailing_silence_ms) == (100, 100)
    assert not recognizer.in_utterance
    recognizer.feed(audio[100 * 32 : 230 * 32])
    assert recognizer.trailing_silence_ms == 0
    assert not recognizer.in_utterance  # 3 frames: not confirmed yet
    recognizer.feed(audio[230 * 32 : 300 * 32])
    assert recognizer.in_utterance
    recognizer.feed(audio[300 * 32 : 450 * 32])
    assert recognizer.trailing_silence_ms == 50
    assert recognizer.in_utterance


def test_partial_frames_wait_for_the_grid() -> None:
    recognizer = create_recognizer("tones")
    recognizer.feed(b"\0" * 333)
    assert recognizer.position_ms == 10  # 320 bytes analysed, 13 buffered


def test_noise_without_tone_is_silence() -> None:
    import numpy as np

    noise = np.random.default_rng(7).normal(0, 8000, 16000).astype("<i2").tobytes()
    recognizer = create_recognizer("tones")
    assert recognizer.feed(noise) + recognizer.flush() == []
    assert recognizer.trailing_silence_ms == 1000


def test_short_blip_is_not_a_word() -> None:
    audio = synthesize([["hotel"]], word_ms=50) + synthesize([["hotel"]], word_ms=40)
    assert finals(feed_all(audio)) == [("hotel", 200, 50)]


def test_language_and_confidence() -> None:
    events = feed_all(synthesize([["india"]]), language="nl,en")  # type: ignore[arg-type]
    (final,) = [e for e in events if isinstance(e, Final)]
    assert final.hypothesis.language == "nl"
    assert all(0 < word.confidence <= 1 for word in final.hypothesis.words)


def test_quiet_audio_is_below_threshold() -> None:
    assert feed_all(synthesize([["alpha"]], amplitude=0.005)) == []


def test_other_sample_rates() -> None:
    audio = synthesize(UTTERANCES, sample_rate=8000)
    recognizer = ToneRecognizer(sample_rate=8000)
    assert finals(recognizer.feed(audio)) == expected_finals(UTTERANCES)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("kaldi", {}),
        ("tones", {"sample_rate": 11025}),
        ("tones", {"utterance_end_ms": 0}),
        ("tones", {"min_ratio": 0}),
    ],
)
def test_bad_recognizer_arguments(name: str, options: dict[str, int]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - several distinct messages
        create_recognizer(name, **options)


@pytest.mark.parametrize(
    "layout",
    [{"word_ms": 205}, {"word_ms": 40}, {"gap_ms": 0}, {"gap_ms": 300}, {"pause_ms": 200}],
)
def test_bad_layouts(layout: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="ms"):
        expected_finals(UTTERANCES, **layout)


def test_unknown_word_and_bad_amplitude() -> None:
    with pytest.raises(ValueError, match="not a tone word"):
        synthesize([["zulu"]])
    with pytest.raises(ValueError, match="amplitude"):
        synthesize([["alpha"]], amplitude=2)
    with pytest.raises(ValueError, match="sample_rate"):
        synthesize([["alpha"]], sample_rate=44101)
