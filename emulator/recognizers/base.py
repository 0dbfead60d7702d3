"""The recognizer interface shared by the emulator's protocol sessions.

A recognizer is a sans-I/O object: no sockets, no asyncio, no clock. Time is
the audio position, counted from the first sample fed to the instance. The
caller (``emulator.protocol``) feeds 16 kHz mono ``pcm_s16le`` of any length
and renders the returned events, in order:

- :class:`SpeechStarted` once the first word of an utterance is confirmed (never
  for a noise burst that yields no word);
- :class:`Interim` zero or more times, each with the whole utterance so far;
- :class:`Final` exactly once per :class:`SpeechStarted`, after
  ``utterance_end_ms`` of silence or on :meth:`Recognizer.flush`. A Final always
  has at least one word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "DEFAULT_UTTERANCE_END_MS",
    "Final",
    "Hypothesis",
    "Interim",
    "Recognizer",
    "RecognizerEvent",
    "SpeechStarted",
    "Word",
    "create_recognizer",
    "language_codes",
]

DEFAULT_UTTERANCE_END_MS = 300
RECOGNIZERS = ("tones", "pocketsphinx")


@dataclass(frozen=True)
class Word:
    """One recognized word; times in ms from the first sample fed."""

    text: str
    start_ms: int
    duration_ms: int
    confidence: float  # (0, 1]


@dataclass(frozen=True)
class Hypothesis:
    """The words of one utterance (interim or final), with its time span."""

    words: tuple[Word, ...]
    start_ms: int
    duration_ms: int
    language: str  # e.g. "en"

    @property
    def text(self) -> str:
        """The words joined by single spaces."""
        return " ".join(word.text for word in self.words)

    @classmethod
    def of(cls, words: Sequence[Word], language: str) -> Hypothesis:
        """The hypothesis spanning ``words`` (at least one), first start to last end."""
        start = words[0].start_ms
        end = max(word.start_ms + word.duration_ms for word in words)
        return cls(tuple(words), start, end - start, language)


@dataclass(frozen=True)
class SpeechStarted:
    """An utterance began at ``start_ms``; a :class:`Final` for it will follow."""

    start_ms: int


@dataclass(frozen=True)
class Interim:
    """A revised hypothesis of the utterance in progress; it replaces earlier ones."""

    hypothesis: Hypothesis


@dataclass(frozen=True)
class Final:
    """The utterance ended (endpointer) or was flushed; its words are settled."""

    hypothesis: Hypothesis


RecognizerEvent = SpeechStarted | Interim | Final


class Recognizer(Protocol):
    """What the protocol sessions drive; see the module docstring for event order."""

    sample_rate: int  # expected input rate, pcm_s16le mono

    def feed(self, pcm: bytes) -> list[RecognizerEvent]:
        """Recognize more audio (any length, odd byte splits allowed); render the events."""
        ...

    def flush(self) -> list[RecognizerEvent]:
        """Finalize the utterance in progress (a Final if it has words); keep feeding after."""
        ...

    @property
    def position_ms(self) -> int:
        """Audio consumed so far, in ms."""
        ...

    @property
    def trailing_silence_ms(self) -> int:
        """Silence since the last speech (0 while speaking; all audio before any speech)."""
        ...

    @property
    def in_utterance(self) -> bool:
        """True between a :class:`SpeechStarted` and the :class:`Final` that ends it."""
        ...


def language_codes(language: str | Sequence[str] | None) -> list[str]:
    """The candidate codes of a ``language`` option (``"nl,en"`` or a list), in order."""
    if language is None:
        return []
    parts = language.split(",") if isinstance(language, str) else list(language)
    return [code.strip() for code in parts if code.strip()]


def create_recognizer(
    name: str,
    *,
    sample_rate: int = 16000,
    language: str | Sequence[str] | None = None,
    **options: Any,
) -> Recognizer:
    """A new recognizer ``"tones"`` or ``"pocketsphinx"``; one per connection.

    ``options`` go to the recognizer's constructor (e.g. ``utterance_end_ms``).
    Raises ``ValueError`` for an unknown name or an unsupported sample rate or
    language; the caller should refuse the connection (400), not retry.
    """
    if name == "tones":
        from emulator.recognizers.tones import ToneRecognizer

        return ToneRecognizer(sample_rate=sample_rate, language=language, **options)
    if name == "pocketsphinx":
        from emulator.recognizers.sphinx import SphinxRecognizer

        return SphinxRecognizer(sample_rate=sample_rate, language=language, **options)
    raise ValueError(f"unknown recognizer {name!r}; expected one of {', '.join(RECOGNIZERS)}")
