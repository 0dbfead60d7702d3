"""Utterance cutting for the real recognizers; decoding is a job for an engine.

One :class:`SegmentingRecognizer` per connection. A WebRTC-style VAD inside
:class:`pocketsphinx.Endpointer` (window = ``utterance_end_ms``) cuts the
stream into utterances; the recognizer keeps each utterance's audio and asks
for decodes with :class:`~emulator.recognizers.base.Decode` events:

- an interim job once the utterance has ``interim_ms`` of audio and then every
  ``interim_ms`` more, never two at a time (so the rate is bounded by both the
  audio and the engines' speed);
- a final job when the endpointer closes the utterance, on :meth:`flush`, or
  at ``max_utterance_ms`` (speech goes on in a new utterance).

Results come back through :meth:`decoded` in any order and leave in stream
order: an ordered list of slots, each waiting for its job or a barrier
(:meth:`mark`). An interim result whose utterance is already closed is
dropped. A SpeechStarted is sent with the first words of an utterance (never
for a noise burst that yields none).

Cheap enough for the event loop: the VAD is a C call per 30 ms frame.
Built with an ``engine``, jobs run inline (tests, whole files).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from pocketsphinx import Endpointer, Vad

from emulator.errors import UnsupportedInput
from emulator.frames import FrameAligner
from emulator.recognizers.base import (
    DEFAULT_UTTERANCE_END_MS,
    Decode,
    DecodeJob,
    Engine,
    Final,
    Hypothesis,
    Interim,
    Marked,
    RecognizerEvent,
    SpeechStarted,
    Word,
    language_codes,
)

__all__ = ["SegmentingRecognizer"]

SAMPLE_RATE = 16000
_BYTES_PER_MS = 2 * SAMPLE_RATE // 1000
_JOB_IDS = itertools.count(1)


@dataclass
class _Utterance:
    start_ms: int
    language: str
    started: bool = False  # SpeechStarted sent
    closed: bool = False  # its final job was asked for
    last: Hypothesis | None = None  # the last Interim sent


@dataclass
class _Slot:
    """One place in the output order: a job's result or a barrier."""

    job: DecodeJob | None = None
    utterance: _Utterance | None = None
    words: list[Word] | None = None
    ready: list[RecognizerEvent] = field(default_factory=list)
    done: bool = False


class SegmentingRecognizer:
    """Sans-I/O utterance cutter for the ``pocketsphinx`` and ``whisper`` engines.

    Feed 16 kHz mono ``pcm_s16le``; carry out the events in order, running each
    :class:`Decode` job and calling :meth:`decoded` with its words. Every
    language code is accepted: the events report the first requested one (or
    ``en``), the engines transcribe English only (see ``TRANSCRIBES``).
    """

    def __init__(
        self,
        engine_name: str,
        *,
        sample_rate: int = SAMPLE_RATE,
        language: str | Sequence[str] | None = None,
        utterance_end_ms: int = DEFAULT_UTTERANCE_END_MS,
        interim_ms: int = 600,
        vad_mode: int = 0,
        max_utterance_ms: int = 25_000,
        engine: Engine | None = None,
    ) -> None:
        if sample_rate != SAMPLE_RATE:
            raise UnsupportedInput(f"{engine_name} needs {SAMPLE_RATE} Hz audio, not {sample_rate}")
        self.sample_rate = sample_rate
        self.engine_name = engine_name
        self._codes = tuple(language_codes(language))
        self.language = (self._codes or ("en",))[0]
        self._engine = engine
        self._window = utterance_end_ms / 1000
        self._vad_mode = vad_mode
        self._interim_bytes = interim_ms * _BYTES_PER_MS
        self._max_bytes = max_utterance_ms * _BYTES_PER_MS
        self._endpointer = self._new_endpointer()
        self._vad = Vad(mode=vad_mode, sample_rate=sample_rate)
        self._frame_bytes: int = self._endpointer.frame_bytes
        self._frames = FrameAligner(self._frame_bytes)
        self._consumed = 0
        self._base_ms = 0  # stream position where the current endpointer started
        self._last_voiced_end = 0
        self._utt: _Utterance | None = None
        self._audio: list[bytes] = []
        self._bytes = 0
        self._next_interim = 0
        self._interim_pending = False
        self._slots: deque[_Slot] = deque()

    # -- the Recognizer protocol ------------------------------------------------

    @property
    def position_ms(self) -> int:
        """Audio consumed so far (whole VAD frames)."""
        return self._consumed // _BYTES_PER_MS

    @property
    def trailing_silence_ms(self) -> int:
        """Non-speech (per VAD frame) since the last speech frame, in ms."""
        return (self._consumed - self._last_voiced_end) // _BYTES_PER_MS

    @property
    def in_utterance(self) -> bool:
        """True while an utterance is open or its final decode has not come back."""
        return self._utt is not None or any(s.job is not None and s.job.final for s in self._slots)

    @property
    def pending(self) -> int:
        """Decode jobs asked for and not yet answered."""
        return sum(1 for s in self._slots if s.job is not None and not s.done)

    def feed(self, pcm: bytes) -> list[RecognizerEvent]:
        """Cut ``pcm`` (any length) into utterances; the events (and jobs) due."""
        data = self._frames.take(pcm)
        events: list[RecognizerEvent] = []
        for offset in range(0, len(data), self._frame_bytes):
            events += self._frame(data[offset : offset + self._frame_bytes])
        return events

    def flush(self) -> list[RecognizerEvent]:
        """Close the utterance in progress (its final job); keep feeding after."""
        if self._utt is None:
            return []
        held = self._frames.drain()
        tail = held[: len(held) & ~1] or b"\0\0"  # end_stream needs at least one sample
        self._consumed += len(held)
        speech = self._endpointer.end_stream(tail)
        if speech is not None:
            self._collect(speech)
        self._endpointer = self._new_endpointer()
        self._base_ms = self.position_ms
        return self._close()

    def decoded(self, job: DecodeJob, words: Sequence[Word]) -> list[RecognizerEvent]:
        """``job`` came back with ``words``: the events now due, in stream order."""
        for slot in self._slots:
            if slot.job is job:
                slot.words, slot.done = list(words), True
                if not job.final:
                    self._interim_pending = False
        return self._drain()

    def mark(self, token: object) -> list[RecognizerEvent]:
        """A barrier after everything asked for so far."""
        self._slots.append(_Slot(ready=[Marked(token)], done=True))
        return self._drain()

    # -- cutting ------------------------------------------------------------------

    def _new_endpointer(self) -> Endpointer:
        return Endpointer(window=self._window, vad_mode=self._vad_mode, sample_rate=SAMPLE_RATE)

    def _frame(self, frame: bytes) -> list[RecognizerEvent]:
        self._consumed += len(frame)
        if self._vad.is_speech(frame):
            self._last_voiced_end = self._consumed
        speech = self._endpointer.process(frame)
        if speech is None:
            return []
        if self._utt is None:
            self._open(self._base_ms + round(self._endpointer.speech_start * 1000))
        self._collect(speech)
        if not self._endpointer.in_speech:
            return self._close()
        if self._bytes >= self._max_bytes:
            return self._split()
        return self._maybe_interim()

    def _open(self, start_ms: int) -> None:
        self._utt = _Utterance(start_ms, self.language)
        self._audio, self._bytes = [], 0
        self._next_interim = self._interim_bytes

    def _collect(self, speech: bytes) -> None:
        self._audio.append(speech)
        self._bytes += len(speech)

    def _split(self) -> list[RecognizerEvent]:
        assert self._utt is not None
        next_start = self._utt.start_ms + self._bytes // _BYTES_PER_MS
        events = self._close()
        self._open(next_start)
        return events

    def _maybe_interim(self) -> list[RecognizerEvent]:
        if self._bytes < self._next_interim or self._interim_pending:
            return []
        self._next_interim = self._bytes + self._interim_bytes
        self._interim_pending = True
        return self._request(final=False)

    def _close(self) -> list[RecognizerEvent]:
        if self._utt is None:
            return []
        events = self._request(final=True)
        self._utt = None
        self._audio, self._bytes = [], 0
        return events

    def _request(self, *, final: bool) -> list[RecognizerEvent]:
        utt = self._utt
        assert utt is not None
        audio = b"".join(self._audio)
        self._audio = [audio]
        if final:
            utt.closed = True
            for slot in self._slots:  # an interim not yet run is moot now
                if slot.utterance is utt and slot.job is not None and not slot.done:
                    slot.job.wanted = False
        job = DecodeJob(next(_JOB_IDS), self.engine_name, audio, utt.start_ms, final, self._codes)
        self._slots.append(_Slot(job=job, utterance=utt))
        if self._engine is None:
            return [Decode(job)]
        return self.decoded(job, self._engine.decode(job))

    # -- ordered output -----------------------------------------------------------

    def _drain(self) -> list[RecognizerEvent]:
        events: list[RecognizerEvent] = []
        while self._slots and self._slots[0].done:
            slot = self._slots.popleft()
            events += slot.ready if slot.job is None else self._resolve(slot)
        return events

    def _resolve(self, slot: _Slot) -> list[RecognizerEvent]:
        utt, job, words = slot.utterance, slot.job, slot.words or []
        assert utt is not None
        assert job is not None
        if not job.final:
            if utt.closed or not words:
                return []  # moot: the final is on its way, or nothing heard yet
            hypothesis = Hypothesis.of(words, utt.language)
            if utt.last is not None and hypothesis.words == utt.last.words:
                return []
            utt.last = hypothesis
            return [*self._started(utt), Interim(hypothesis)]
        # A SpeechStarted promised a Final: if the final decode drops every
        # word, settle on the last Interim rather than leave the utterance open.
        final = Hypothesis.of(words, utt.language) if words else utt.last
        if final is None:
            return []
        return [*self._started(utt), Final(final)]

    @staticmethod
    def _started(utt: _Utterance) -> list[RecognizerEvent]:
        if utt.started:
            return []
        utt.started = True
        return [SpeechStarted(utt.start_ms)]
