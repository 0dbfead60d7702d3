"""trailing_silence_ms: the silence that ends some audio (no I/O)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from emulator.tones import synthesize
from workers.vad import trailing_silence_ms

RATE = 16000


def silence(ms: int) -> bytes:
    return b"\x00\x00" * (RATE * ms // 1000)


def test_silence_after_speech_is_measured_and_speech_resets_it() -> None:
    word = synthesize([["alpha"]], pause_ms=0, lead_ms=0)
    assert trailing_silence_ms(silence(500), RATE) == 500  # all of it silent
    assert trailing_silence_ms(silence(500) + word, RATE) < 30  # the tone's fade-out
    assert 300 <= trailing_silence_ms(silence(500) + word + silence(300), RATE) <= 330


def test_a_long_silence_is_measured_across_scan_chunks() -> None:
    word = synthesize([["bravo"]], pause_ms=0, lead_ms=0)
    assert 2500 <= trailing_silence_ms(word + silence(2500), RATE) <= 2530


@given(st.integers(0, 2000), st.integers(0, 159))
def test_partial_frames_at_the_end_do_not_count(ms: int, extra: int) -> None:
    audio = synthesize([["charlie"]], pause_ms=0) + silence(ms) + b"\x00\x00" * extra
    assert trailing_silence_ms(audio, RATE) <= ms + 30


def test_mulaw_is_decoded_before_measuring() -> None:
    loud = bytes([0x00, 0x80]) * 800  # G.711 codes of full-scale -/+ samples, 200 ms
    quiet = b"\xff" * 1600  # the code of 0, 200 ms (as raw bytes it is loud)
    assert trailing_silence_ms(loud + quiet, 8000, "mulaw") == 200


def test_stereo_frames_hold_both_channels() -> None:
    stereo_loud = b"\xff\x7f\x00\x00" * 1600  # one loud channel, 200 ms
    stereo_quiet = b"\x00\x00\x00\x00" * 800
    assert trailing_silence_ms(stereo_loud + stereo_quiet, 8000, channels=2) == 100
