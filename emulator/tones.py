"""The tone language of the deterministic ``tones`` recognizer, and its synthesizer.

One word per tone burst. The ten words sit on odd multiples of 100 Hz: every
frequency is the centre of a DFT bin of a 10 ms frame (100 Hz bins at any
sample rate), so a steady tone leaks nothing into the other words' bins; no
word is the 2nd or 3rd harmonic of another (odd x 2 is even; the triples 1500,
2100, 2700, 3300 are left out); neighbours are two bins apart; all are below
4 kHz, so 8 kHz audio and band-limited codecs keep them.

:func:`synthesize` lays bursts on the 10 ms grid; :func:`expected_finals` says
what :class:`emulator.recognizers.tones.ToneRecognizer` must produce for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType

import numpy as np

__all__ = [
    "FRAME_MS",
    "VOCABULARY",
    "expected_finals",
    "synthesize",
]

FRAME_MS = 10  # the analysis grid, counted from the first sample fed
RAMP_MS = 5  # raised-cosine fade in/out inside each burst (keeps codecs from smearing)

VOCABULARY: Mapping[str, int] = MappingProxyType(
    {
        "alpha": 500,
        "bravo": 700,
        "charlie": 900,
        "delta": 1100,
        "echo": 1300,
        "foxtrot": 1700,
        "golf": 1900,
        "hotel": 2300,
        "india": 2900,
        "juliet": 3100,
    }
)

_DEFAULT_UTTERANCE_END_MS = 300  # emulator.recognizers.base.DEFAULT_UTTERANCE_END_MS
_MIN_WORD_MS = 50  # ToneRecognizer's default min_word_ms


def synthesize(
    utterances: Sequence[Sequence[str]],
    *,
    sample_rate: int = 16000,
    word_ms: int = 200,
    gap_ms: int = 100,
    pause_ms: int = 600,
    lead_ms: int = 200,
    amplitude: float = 0.3,
) -> bytes:
    """``pcm_s16le`` mono audio speaking ``utterances`` (lists of VOCABULARY words).

    Layout: ``lead_ms`` of silence, then each utterance's words as ``word_ms``
    bursts ``gap_ms`` apart, utterances ``pause_ms`` apart, and ``pause_ms`` of
    silence at the end so the last utterance is endpointed without a flush.
    All times must be multiples of 10 ms. Raises ``ValueError`` on a bad layout.
    """
    _check_layout(sample_rate, word_ms, gap_ms, pause_ms, lead_ms)
    if not 0 < amplitude <= 1:
        raise ValueError(f"amplitude must be in (0, 1], not {amplitude}")
    words = list(_layout(utterances, word_ms, gap_ms, pause_ms, lead_ms))
    end_ms = _end_ms(words, word_ms, pause_ms, lead_ms)
    signal = np.zeros(end_ms * sample_rate // 1000, dtype=np.float64)
    burst = _burst_envelope(sample_rate, word_ms) * amplitude
    t = np.arange(burst.size) / sample_rate
    for word, start_ms, _ in words:
        first = start_ms * sample_rate // 1000
        signal[first : first + burst.size] = burst * np.sin(2 * np.pi * VOCABULARY[word] * t)
    return np.round(signal * 32767).astype("<i2").tobytes()


def expected_finals(
    utterances: Sequence[Sequence[str]],
    *,
    word_ms: int = 200,
    gap_ms: int = 100,
    pause_ms: int = 600,
    lead_ms: int = 200,
    utterance_end_ms: int = _DEFAULT_UTTERANCE_END_MS,
) -> list[tuple[str, int, int]]:
    """The ``(text, start_ms, duration_ms)`` of each Final for :func:`synthesize`'s audio.

    Pass the same layout arguments as to :func:`synthesize`. Raises
    ``ValueError`` if the layout would not endpoint as written (a gap at least
    ``utterance_end_ms``, a pause shorter than it, words under 50 ms).
    """
    _check_layout(16000, word_ms, gap_ms, pause_ms, lead_ms)
    if word_ms < _MIN_WORD_MS:
        raise ValueError(f"words shorter than {_MIN_WORD_MS} ms are not recognized: {word_ms}")
    if gap_ms >= utterance_end_ms or pause_ms < utterance_end_ms:
        raise ValueError(
            f"need gap_ms < utterance_end_ms <= pause_ms, got {gap_ms}, "
            f"{utterance_end_ms}, {pause_ms}"
        )
    finals: dict[int, list[tuple[str, int]]] = {}
    for word, start_ms, index in _layout(utterances, word_ms, gap_ms, pause_ms, lead_ms):
        finals.setdefault(index, []).append((word, start_ms))
    return [
        (" ".join(w for w, _ in words), words[0][1], words[-1][1] + word_ms - words[0][1])
        for words in finals.values()
    ]


def _check_layout(sample_rate: int, *times_ms: int) -> None:
    if sample_rate % (1000 // FRAME_MS) or sample_rate < 2 * max(VOCABULARY.values()) + 200:
        raise ValueError(f"sample_rate must be a multiple of 100 Hz above 6.4 kHz: {sample_rate}")
    word_ms, gap_ms = times_ms[:2]
    if any(ms % FRAME_MS or ms < 0 for ms in times_ms):
        raise ValueError(f"times must be non-negative multiples of {FRAME_MS} ms: {times_ms}")
    if word_ms < 2 * RAMP_MS or gap_ms < FRAME_MS:
        raise ValueError(f"need word_ms >= 10 and gap_ms >= 10, got {word_ms}, {gap_ms}")


def _layout(
    utterances: Sequence[Sequence[str]], word_ms: int, gap_ms: int, pause_ms: int, lead_ms: int
) -> Iterator[tuple[str, int, int]]:
    """``(word, start_ms, utterance index)`` for every word, in order."""
    position = lead_ms
    for index, utterance in enumerate(utterances):
        for number, word in enumerate(utterance):
            if word not in VOCABULARY:
                raise ValueError(f"{word!r} is not a tone word; use one of {list(VOCABULARY)}")
            position += gap_ms if number else 0
            yield word, position, index
            position += word_ms
        position += pause_ms


def _end_ms(words: list[tuple[str, int, int]], word_ms: int, pause_ms: int, lead_ms: int) -> int:
    if not words:
        return lead_ms
    return words[-1][1] + word_ms + pause_ms


def _burst_envelope(sample_rate: int, word_ms: int) -> np.ndarray:
    """1.0 over ``word_ms`` with raised-cosine ramps of RAMP_MS at both ends."""
    envelope = np.ones(word_ms * sample_rate // 1000)
    ramp_len = RAMP_MS * sample_rate // 1000
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp_len) + 0.5) / ramp_len)
    envelope[:ramp_len] = ramp
    envelope[-ramp_len:] = ramp[::-1]
    return envelope
