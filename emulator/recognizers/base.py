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

Real recognizers (``pocketsphinx``, ``whisper``) split the work: the
recognizer object cuts utterances (cheap, on the event loop) and returns a
:class:`Decode` event for each piece of audio to transcribe; the caller runs
``job`` on an :class:`Engine` (in a worker process, ``emulator.recognizers.pool``)
and hands the words back with :meth:`Recognizer.decoded`, which returns the
events that became due, always in stream order. :meth:`Recognizer.mark` puts a
barrier in that order (a flush waits for the finals before it). Built with an
``engine``, a recognizer runs its jobs inline instead and never returns
:class:`Decode` (tests, whole files in a worker process). ``tones`` is cheap
and exact, and never asks for a decode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from emulator.errors import UnsupportedInput

__all__ = [
    "DEFAULT_UTTERANCE_END_MS",
    "Decode",
    "DecodeJob",
    "Engine",
    "Final",
    "Hypothesis",
    "Interim",
    "Marked",
    "Recognizer",
    "RecognizerEvent",
    "SpeechStarted",
    "Word",
    "create_recognizer",
    "language_codes",
]

DEFAULT_UTTERANCE_END_MS = 300
RECOGNIZERS = ("tones", "pocketsphinx", "whisper")
# What each recognizer can transcribe; every language of the API is accepted,
# and one the model cannot do is transcribed as its language anyway (README).
TRANSCRIBES: dict[str, str] = {
    "tones": "tone words; reports the first requested language (or en)",
    "pocketsphinx": "English only (en-us model); other languages are accepted, heard as English",
    "whisper": "English only (tiny.en model); other languages are accepted, heard as English",
}


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


@dataclass
class DecodeJob:
    """Audio for an :class:`Engine`: 16 kHz mono s16le starting at ``offset_ms``.

    ``final`` jobs settle an utterance; interim ones may be skipped when
    ``wanted`` turned False (a later job made them moot) before they ran.
    """

    job_id: int
    engine: str
    audio: bytes
    offset_ms: int
    final: bool
    language: tuple[str, ...] = ()
    wanted: bool = True


@dataclass(frozen=True)
class Decode:
    """Run ``job`` on its engine, then call :meth:`Recognizer.decoded` with the words."""

    job: DecodeJob


@dataclass(frozen=True)
class Marked:
    """The barrier placed by :meth:`Recognizer.mark` with ``token`` was reached."""

    token: object


RecognizerEvent = SpeechStarted | Interim | Final | Decode | Marked


class Engine(Protocol):
    """A transcriber of whole pieces of audio (a model loaded once per process)."""

    def decode(self, job: DecodeJob) -> list[Word]:
        """The words of ``job.audio``, times in ms of the stream (``offset_ms`` added)."""
        ...


class Recognizer(Protocol):
    """What the protocol sessions drive; see the module docstring for event order."""

    sample_rate: int  # expected input rate, pcm_s16le mono

    def feed(self, pcm: bytes) -> list[RecognizerEvent]:
        """Recognize more audio (any length, odd byte splits allowed); render the events."""
        ...

    def flush(self) -> list[RecognizerEvent]:
        """Finalize the utterance in progress (a Final if it has words); keep feeding after."""
        ...

    def decoded(self, job: DecodeJob, words: Sequence[Word]) -> list[RecognizerEvent]:
        """A :class:`Decode` job finished with ``words``; the events now due, in order."""
        ...

    def mark(self, token: object) -> list[RecognizerEvent]:
        """A barrier: :class:`Marked` comes once every event before it was returned."""
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
    inline: bool = False,
    **options: Any,
) -> Recognizer:
    """A new recognizer ``"tones"``, ``"pocketsphinx"`` or ``"whisper"``; one per connection.

    ``options`` go to the recognizer's constructor (e.g. ``utterance_end_ms``).
    ``inline`` loads the engine in this process and runs every decode at once
    (no :class:`Decode` events: tests, whole files). Raises
    :class:`~emulator.errors.UnsupportedInput` (a ``ValueError``) for an
    unknown name or an unsupported sample rate; the caller should refuse the
    connection (400), not retry.
    """
    if name == "tones":
        from emulator.recognizers.tones import ToneRecognizer

        return ToneRecognizer(sample_rate=sample_rate, language=language, **options)
    if name in ("pocketsphinx", "whisper"):
        from emulator.recognizers.engines import load_engine
        from emulator.recognizers.segmenter import SegmentingRecognizer

        engine = load_engine(name) if inline else None
        return SegmentingRecognizer(
            name, sample_rate=sample_rate, language=language, engine=engine, **options
        )
    raise UnsupportedInput(f"unknown recognizer {name!r}; expected one of {', '.join(RECOGNIZERS)}")
