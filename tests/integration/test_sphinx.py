"""The real recognizers (pocketsphinx, whisper) on espeak-ng English, decoding inline
(CI installs espeak-ng; no skip)."""

from __future__ import annotations

import difflib
import io
import shutil
import subprocess
import time

import av
import pytest

from emulator.errors import UnsupportedInput
from emulator.recognizers import (
    Decode,
    Final,
    Interim,
    RecognizerEvent,
    SpeechStarted,
    create_recognizer,
)
from emulator.recognizers.segmenter import SegmentingRecognizer

REAL = ["pocketsphinx", "whisper"]

# en-us+f2 at 150 wpm is the espeak-ng voice pocketsphinx's model hears best
# (measured over 10 voices x 2 speeds; the default voice got ~25-30% of words).
VOICE = ["-v", "en-us+f2", "-s", "150"]
SENTENCES = ["the quick brown fox jumps over the lazy dog", "one two three four five"]


def speak(text: str) -> bytes:
    """espeak-ng's 22050 Hz WAV for ``text``, as 16 kHz mono s16."""
    espeak = shutil.which("espeak-ng")
    assert espeak, "espeak-ng is required for this test: apt-get install espeak-ng"
    wav = subprocess.run([espeak, *VOICE, "--stdout", text], capture_output=True, check=True)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
    chunks: list[bytes] = []
    with av.open(io.BytesIO(wav.stdout)) as container:
        for frame in container.decode(audio=0):
            chunks += [f.to_ndarray().tobytes() for f in resampler.resample(frame)]
    chunks += [f.to_ndarray().tobytes() for f in resampler.resample(None)]
    return b"".join(chunks)


def silence(ms: int) -> bytes:
    return b"\0" * (32 * ms)


def word_overlap(reference: str, hypothesis: str) -> float:
    """The share of reference words found, in order, in the hypothesis."""
    matcher = difflib.SequenceMatcher(a=reference.split(), b=hypothesis.split())
    return sum(block.size for block in matcher.get_matching_blocks()) / len(reference.split())


def recognize(audio: bytes, name: str, chunk: int = 640) -> list[RecognizerEvent]:
    recognizer = create_recognizer(name, inline=True)
    events: list[RecognizerEvent] = []
    for offset in range(0, len(audio), chunk):
        events += recognizer.feed(audio[offset : offset + chunk])
    return events + recognizer.flush()


@pytest.fixture(scope="module")
def speech() -> list[bytes]:
    return [speak(text) for text in SENTENCES]


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL)
@pytest.mark.parametrize("index", range(len(SENTENCES)))
def test_recognizes_most_words(speech: list[bytes], index: int, name: str) -> None:
    events = recognize(silence(500) + speech[index] + silence(800), name)
    finals = [e.hypothesis for e in events if isinstance(e, Final)]
    text = " ".join(h.text for h in finals)
    assert word_overlap(SENTENCES[index], _normal(text)) >= 0.5, text
    assert isinstance(events[0], SpeechStarted)
    assert 300 <= events[0].start_ms <= 700
    assert all(0 < w.confidence <= 1 for h in finals for w in h.words)
    assert all(any(c.isalnum() for c in w.text) for h in finals for w in h.words)


def _normal(text: str) -> str:
    digits = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    words = "".join(c if c.isalnum() or c.isspace() else " " for c in text.lower()).split()
    return " ".join(digits[int(w)] if w.isdigit() and len(w) == 1 else w for w in words)


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL)
def test_event_order_and_endpointing(speech: list[bytes], name: str) -> None:
    audio = silence(300) + speech[0] + silence(700) + speech[1] + silence(700)
    recognizer = create_recognizer(name, inline=True, interim_ms=300)
    events = recognizer.feed(audio)
    assert not recognizer.in_utterance
    assert recognizer.trailing_silence_ms >= 600
    assert recognizer.flush() == []
    kinds = [type(e) for e in events]
    assert kinds.count(SpeechStarted) == kinds.count(Final) == 2
    open_utterance = False
    for event in events:  # SpeechStarted, Interim*, Final - per utterance
        assert isinstance(event, SpeechStarted) != open_utterance
        open_utterance = not isinstance(event, Final)
    first, second = (e.hypothesis for e in events if isinstance(e, Final))
    assert first.start_ms + first.duration_ms < second.start_ms
    assert Interim in kinds


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL)
def test_flush_mid_speech_gives_a_final(speech: list[bytes], name: str) -> None:
    recognizer = create_recognizer(name, inline=True)
    audio = silence(300) + speech[1]
    events = recognizer.feed(audio[: len(audio) * 3 // 4])
    events += recognizer.flush()
    assert isinstance(events[-1], Final)
    assert recognizer.feed(silence(500)) + recognizer.flush() == []


@pytest.mark.parametrize("name", REAL)
def test_silence_and_noise_give_nothing(name: str) -> None:
    import numpy as np

    noise = np.random.default_rng(3).normal(0, 300, 16000).astype("<i2").tobytes()
    recognizer = create_recognizer(name, inline=True)
    assert recognizer.feed(silence(1000) + noise + silence(1000)) + recognizer.flush() == []
    assert not recognizer.in_utterance


def test_every_language_is_accepted_at_16k() -> None:
    for name in REAL:
        recognizer = create_recognizer(name, language="nl,en")
        assert isinstance(recognizer, SegmentingRecognizer)
        assert recognizer.language == "nl"  # reported as asked; heard as English
        with pytest.raises(UnsupportedInput, match="16000"):
            create_recognizer(name, sample_rate=8000)


def test_without_an_engine_decoding_is_handed_out(speech: list[bytes]) -> None:
    recognizer = create_recognizer("whisper")
    events = recognizer.feed(silence(300) + speech[1] + silence(700))
    jobs = [e.job for e in events if isinstance(e, Decode)]
    assert jobs
    assert jobs[-1].final
    assert recognizer.in_utterance  # until the final's words are back
    from emulator.recognizers.engines import run_job

    settled = [e for job in jobs for e in recognizer.decoded(job, run_job(job))]
    assert isinstance(settled[-1], Final)
    assert not recognizer.in_utterance
    assert recognizer.mark("m")[-1].token == "m"  # type: ignore[union-attr]


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL)
def test_real_time_factor(speech: list[bytes], name: str) -> None:
    """Report the CPU cost; fail only if far from real time (shared CI runners)."""
    audio = silence(300) + speech[0] + silence(700) + speech[1] + silence(700)
    recognizer = create_recognizer(name, inline=True)
    started = time.process_time()
    for offset in range(0, len(audio), 640):
        recognizer.feed(audio[offset : offset + 640])
    rtf = (time.process_time() - started) / (len(audio) / 32000)
    print(f"{name} real-time factor: {rtf:.3f}")
    assert rtf < 1.5


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL)
def test_over_long_utterance_is_split(speech: list[bytes], name: str) -> None:
    recognizer = create_recognizer(name, inline=True, max_utterance_ms=1200)
    events = recognizer.feed(silence(300) + speech[0] + silence(700))
    kinds = [type(e) for e in events]
    assert kinds.count(Final) >= 2
    assert kinds.count(SpeechStarted) == kinds.count(Final)
    starts = [e.hypothesis.start_ms for e in events if isinstance(e, Final)]
    assert starts == sorted(starts)
