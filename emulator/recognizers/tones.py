"""The deterministic ``tones`` recognizer: one word per tone burst (see ``emulator.tones``).

Audio is cut into 10 ms frames on a grid counted from the first sample fed.
Each frame gets a label: word ``k`` if its energy is above ``threshold_dbfs``
and tone ``k`` holds at least ``min_ratio`` of it, else silence. A run of at
least ``min_word_ms`` of one label is a word; a silent frame between two runs
of the same tone makes them two words. ``utterance_end_ms`` of silence after a
word ends the utterance.

Output depends only on audio content, never on how it was split across
:meth:`ToneRecognizer.feed` calls: partial frames are buffered, frames are
labelled independently, and the per-frame arithmetic is exact (integer samples
times an integer basis, summed in float64 far below 2**53), so batched and
single-frame analysis agree to the bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from emulator.frames import FrameAligner
from emulator.recognizers.base import (
    DEFAULT_UTTERANCE_END_MS,
    DecodeJob,
    Final,
    Hypothesis,
    Interim,
    Marked,
    RecognizerEvent,
    SpeechStarted,
    Word,
    language_codes,
)
from emulator.tones import FRAME_MS, VOCABULARY

__all__ = ["ToneRecognizer"]

_BASIS_SCALE = 2**14  # integer basis: |x| <= 2**15, so each dot product stays < 2**38


class _FrameAnalyser:
    """Labels whole frames: ``(label, ratio)`` with label -1 for silence."""

    def __init__(self, sample_rate: int, threshold_dbfs: float, min_ratio: float) -> None:
        self.frame_samples = sample_rate * FRAME_MS // 1000
        n = np.arange(self.frame_samples)
        phases = 2 * np.pi * np.outer(n, list(VOCABULARY.values())) / sample_rate
        basis = np.concatenate([np.cos(phases), np.sin(phases)], axis=1)
        self._basis = np.round(basis * _BASIS_SCALE)  # integer-valued float64
        self._tones = len(VOCABULARY)
        # A pure tone on a bin centre has |X|**2 = energy * N / 2 (times the scale**2).
        self._norm = self.frame_samples / 2 * _BASIS_SCALE**2
        full_scale = 10 ** (threshold_dbfs / 20) * 32768
        self._min_energy = full_scale**2 * self.frame_samples
        self._min_power = min_ratio * self._norm

    def label(self, frames: np.ndarray) -> tuple[list[int], list[float]]:
        """Label each row of ``frames`` (int16 samples as float64): ``(labels, ratios)``."""
        energy = np.einsum("ij,ij->i", frames, frames)
        if energy.max() < self._min_energy:  # fast path: all silent
            return [-1] * len(frames), [0.0] * len(frames)
        proj = frames @ self._basis
        proj *= proj
        power = proj[:, : self._tones] + proj[:, self._tones :]
        best = power.argmax(axis=1)
        best_power = power.max(axis=1)
        voiced = (energy >= self._min_energy) & (best_power >= self._min_power * energy)
        labels = np.where(voiced, best, -1).tolist()
        return labels, [
            power / (e * self._norm) if label >= 0 else 0.0
            for label, power, e in zip(labels, best_power.tolist(), energy.tolist(), strict=True)
        ]


class ToneRecognizer:
    """Sans-I/O recognizer of tone words; exact, split-independent output.

    Feed ``pcm_s16le`` mono at ``sample_rate`` (any multiple of 100 Hz from
    8 kHz); render the returned events in order; call :meth:`flush` when the
    client asks to finalize. ``language`` (``"nl,en"`` or a list) only sets the
    reported language: its first code, else ``"en"``.
    """

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        language: str | Sequence[str] | None = None,
        utterance_end_ms: int = DEFAULT_UTTERANCE_END_MS,
        min_word_ms: int = 50,
        threshold_dbfs: float = -40.0,
        min_ratio: float = 0.5,
    ) -> None:
        if sample_rate % 100 or sample_rate < 8000:
            raise ValueError("tones needs a sample rate that is a multiple of 100 Hz >= 8 kHz")
        if utterance_end_ms < FRAME_MS or min_word_ms < FRAME_MS:
            raise ValueError("utterance_end_ms and min_word_ms must be at least 10 ms")
        if not 0 < min_ratio <= 1:
            raise ValueError(f"min_ratio must be in (0, 1], not {min_ratio}")
        self.sample_rate = sample_rate
        self.language = (language_codes(language) or ["en"])[0]
        self._analyser = _FrameAnalyser(sample_rate, threshold_dbfs, min_ratio)
        self._frame_bytes = 2 * self._analyser.frame_samples
        self._end_frames = math.ceil(utterance_end_ms / FRAME_MS)
        self._min_frames = math.ceil(min_word_ms / FRAME_MS)
        self._partial = FrameAligner(self._frame_bytes)
        self._frames = 0  # whole frames analysed
        self._last_voiced_end = 0  # frame index just after the last tone frame
        self._run_label = -1  # the tone run in progress (-1: none)
        self._run_start = 0
        self._run_length = 0
        self._run_ratio = 0.0  # sum of the run's frame ratios
        self._words: list[Word] = []
        self._in_utterance = False

    @property
    def position_ms(self) -> int:
        """Audio analysed so far (whole 10 ms frames; a buffered partial frame is not counted)."""
        return self._frames * FRAME_MS

    @property
    def trailing_silence_ms(self) -> int:
        """Silent frames since the last tone frame, in ms (0 inside a tone)."""
        return (self._frames - self._last_voiced_end) * FRAME_MS

    @property
    def in_utterance(self) -> bool:
        """True between a SpeechStarted and its Final."""
        return self._in_utterance

    def feed(self, pcm: bytes) -> list[RecognizerEvent]:
        """Analyse ``pcm`` (any length); return the events of every completed frame."""
        data = self._partial.take(pcm)
        if not data:
            return []
        samples = np.frombuffer(data, dtype="<i2").astype(np.float64)
        labels, ratios = self._analyser.label(samples.reshape(-1, self._analyser.frame_samples))
        events: list[RecognizerEvent] = []
        for label, ratio in zip(labels, ratios, strict=True):
            events += self._step(label, ratio)
        return events

    def flush(self) -> list[RecognizerEvent]:
        """End the utterance now: a Final of its words (cutting a confirmed tone here).

        A tone run too short to be a word yet is kept and may become the first
        word of the next utterance; a buffered partial frame stays buffered.
        """
        if self._run_label >= 0 and self._run_length >= self._min_frames:
            self._words.append(self._run_word())
            self._run_start, self._run_length, self._run_ratio = self._frames, 0, 0.0
        return self._finish()

    def decoded(self, job: DecodeJob, words: Sequence[Word]) -> list[RecognizerEvent]:
        """Never called: tones decodes as it goes and asks for no jobs."""
        raise RuntimeError("the tones recognizer runs no decode jobs")

    def mark(self, token: object) -> list[RecognizerEvent]:
        """Nothing is ever pending here: the barrier is reached at once."""
        return [Marked(token)]

    def _step(self, label: int, ratio: float) -> list[RecognizerEvent]:
        events: list[RecognizerEvent] = []
        if label != self._run_label or label < 0:
            events += self._close_run()
            self._run_label, self._run_start, self._run_length = label, self._frames, 0
            self._run_ratio = 0.0
        self._frames += 1
        if label >= 0:
            self._run_length += 1
            self._run_ratio += ratio
            self._last_voiced_end = self._frames
            if self._run_length == self._min_frames and not self._in_utterance:
                self._in_utterance = True
                events.append(SpeechStarted(self._run_start * FRAME_MS))
        elif self._in_utterance and self._frames - self._last_voiced_end >= self._end_frames:
            events += self._finish()
        return events

    def _close_run(self) -> list[RecognizerEvent]:
        if self._run_label < 0 or self._run_length < self._min_frames:
            return []
        self._words.append(self._run_word())
        return [Interim(Hypothesis.of(self._words, self.language))]

    def _run_word(self) -> Word:
        confidence = min(1.0, max(0.01, round(self._run_ratio / self._run_length, 2)))
        return Word(
            text=list(VOCABULARY)[self._run_label],
            start_ms=self._run_start * FRAME_MS,
            duration_ms=self._run_length * FRAME_MS,
            confidence=confidence,
        )

    def _finish(self) -> list[RecognizerEvent]:
        words, self._words = self._words, []
        self._in_utterance = False
        return [Final(Hypothesis.of(words, self.language))] if words else []
