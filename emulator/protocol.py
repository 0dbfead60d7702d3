"""Sans-I/O emulator sessions: audio and flush requests in, server frames out.

Nothing here touches a socket or a clock. ``emulator.server`` is the pump: it
feeds every binary frame to :meth:`Connection.receive_bytes`, every text frame to
:meth:`Connection.receive_text`, and carries out the returned actions in order.

- :class:`RealtimeSession` renders recognizer results as ``transcript`` frames
  (protocol page, "Server to client").
- :class:`TurnsSession` turns the recognizer's utterances and silences into
  ``turn_start`` / ``turn_end_candidate`` / ``turn_continuation`` /
  ``turn_end``. Thresholds, in ms of trailing silence (see
  :func:`turn_silence_ms`): ``utterance_end_ms - 250 * ln(1 - p)``, monotonic
  in the probability ``p``, so eager <= final always holds. :class:`TurnOptions`
  switches to the newest client's view (no continuations, repeated candidates).
- :class:`Connection` adds the audio decoding and the audio-time faults
  (``drop_after_ms``, ``hang_after_ms``) on top of a session.

Real recognizers hand decoding out as :class:`Decode` actions: the pump runs
the job in a worker process and feeds the words back with
:meth:`Connection.decoded`; frames always leave in stream order, and a
``flush_confirmation`` waits for the finals before it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from emulator.errors import DecodeError
from schemas.wire import (
    FlushConfirmation,
    MalformedMessage,
    StreamParams,
    Transcript,
    TurnContinuation,
    TurnEnd,
    TurnEndCandidate,
    TurnStart,
    WireWord,
    parse_client_message,
)

if TYPE_CHECKING:
    from emulator.recognizers import Hypothesis, Recognizer, RecognizerEvent, Word
from emulator.recognizers.base import DecodeJob

__all__ = [
    "CLOSE_INVALID_DATA",
    "Action",
    "Close",
    "Connection",
    "Decode",
    "Drop",
    "Hang",
    "Output",
    "RealtimeSession",
    "Send",
    "Session",
    "TurnOptions",
    "TurnsSession",
    "create_session",
    "turn_silence_ms",
]

# Close code for audio that cannot be decoded and for malformed text frames:
# 1007 "invalid frame payload data" (RFC 6455 7.4.1) says the payload does not
# match what the connection declared; the protocol page documents no codes.
CLOSE_INVALID_DATA = 1007
STEP_MS = 10  # turns are evaluated on a 10 ms grid: the same turns for any split
_STEP_BYTES = 16 * 2 * STEP_MS  # 16 kHz mono s16


TURN_TAU_MS = 250  # time constant of the modelled end-of-turn probability
_MAX_PROBABILITY = 0.999  # p = 1 would need infinite silence: only a flush ends it


def turn_silence_ms(probability: float, utterance_end_ms: int) -> int:
    """Trailing silence (ms) after which the end-of-turn probability reaches ``probability``.

    The model: once the utterance has ended (``utterance_end_ms`` of silence,
    so its final exists), the probability that the turn is over grows as
    ``p(s) = 1 - exp(-(s - utterance_end_ms) / 250 ms)``. Solved for ``s``:
    defaults eager 0.5 -> 473 ms, final 0.92 -> 931 ms (300 ms utterance end),
    so a candidate leads its ``turn_end`` by ~460 ms; ``eager == final`` gives
    no lead at all, as the vendor's client warns.
    """
    p = min(max(probability, 0.0), _MAX_PROBABILITY)
    return utterance_end_ms + round(-TURN_TAU_MS * math.log(1.0 - p))


class _AudioDecoder(Protocol):
    def feed(self, data: bytes) -> bytes: ...

    def close(self) -> None: ...


Output = str | DecodeJob
"""What a session returns: a text frame to send, or a job to decode (then call
``decoded`` with its words)."""


@dataclass(frozen=True)
class _Flush:
    """The barrier token of a flush_request."""

    request_id: str | None


# --------------------------------------------------------------------------- sessions


class Session(Protocol):
    """What :class:`Connection` needs from a realtime or turns session."""

    def feed(self, pcm: bytes) -> list[Output]:
        """Recognize 16 kHz mono s16le; return the frames to send and jobs to run."""
        ...

    def flush(self, request_id: str | None) -> list[Output]:
        """Finalize buffered audio; a ``flush_confirmation`` follows its finals."""
        ...

    def decoded(self, job: DecodeJob, words: Sequence[Word]) -> list[Output]:
        """A job came back; the frames now due."""
        ...


class _Renderer:
    """Shapes hypotheses under the connection's ``include_*`` flags."""

    def __init__(self, params: StreamParams, *, confidence: bool) -> None:
        self.params = params
        self._confidence = confidence and params.include_confidence
        self._default_language = params.language[0] if params.language else "en"

    def timing(self, start_ms: int, duration_ms: int) -> dict[str, int]:
        if not self.params.include_timestamps:
            return {}
        return {"start_ms": start_ms, "duration_ms": duration_ms}

    def language(self, hypothesis: Hypothesis, *, final: bool) -> dict[str, str]:
        if not self.params.include_language:
            return {}
        fallback = self._default_language if final else ""
        return {"language": hypothesis.language or fallback}

    def words(self, hypotheses: Sequence[Hypothesis]) -> dict[str, tuple[WireWord, ...]]:
        if not self.params.include_words:
            return {}
        return {"words": tuple(self._word(w) for h in hypotheses for w in h.words)}

    def _word(self, word: Word) -> WireWord:
        confidence = word.confidence if self._confidence else None
        return WireWord(
            text=word.text, confidence=confidence, **self.timing(word.start_ms, word.duration_ms)
        )


class RealtimeSession:
    """The ``/realtime`` endpoint: every recognizer result becomes a ``transcript``.

    ``is_final`` is sent only with ``include_interim`` (absent means final);
    interims are sent only with ``include_interim``; ``speaker_id`` is 0 with
    ``diarize`` (one speaker, a valid id per the protocol page).
    """

    def __init__(self, params: StreamParams, recognizer: Recognizer) -> None:
        self._recognizer = recognizer
        self._render = _Renderer(params, confidence=True)
        self._params = params

    def feed(self, pcm: bytes) -> list[Output]:
        """Recognize ``pcm``; return the transcripts (and jobs) it produced."""
        return self._frames(self._recognizer.feed(pcm))

    def flush(self, request_id: str | None) -> list[Output]:
        """Finalize: the resulting finals, then the ``flush_confirmation`` (maybe later,
        from :meth:`decoded`, once the finals' decodes are back)."""
        events = self._recognizer.flush() + self._recognizer.mark(_Flush(request_id))
        return self._frames(events)

    def decoded(self, job: DecodeJob, words: Sequence[Word]) -> list[Output]:
        """A job came back; the transcripts now due."""
        return self._frames(self._recognizer.decoded(job, words))

    def _frames(self, events: Sequence[RecognizerEvent]) -> list[Output]:
        from emulator.recognizers import Decode, Final, Interim, Marked

        frames: list[Output] = []
        for event in events:
            if isinstance(event, Final):
                frames.append(self._transcript(event.hypothesis, final=True))
            elif isinstance(event, Interim) and self._params.include_interim:
                frames.append(self._transcript(event.hypothesis, final=False))
            elif isinstance(event, Decode):
                frames.append(event.job)
            elif isinstance(event, Marked) and isinstance(event.token, _Flush):
                frames.append(FlushConfirmation(id=event.token.request_id).to_json())
        return frames

    def _transcript(self, hypothesis: Hypothesis, *, final: bool) -> str:
        render = self._render
        message = Transcript(
            text=hypothesis.text,
            is_final=final,
            speaker_id=0 if self._params.diarize else None,
            **render.timing(hypothesis.start_ms, hypothesis.duration_ms),
            **render.language(hypothesis, final=final),
            **render.words([hypothesis]),
        )
        return message.to_json(include_is_final=self._params.include_interim)


@dataclass(frozen=True)
class TurnOptions:
    """How the emulated turns endpoint behaves where sources disagree.

    ``continuation``: send ``turn_continuation`` when the speaker goes on after
    a candidate (the protocol page's order); False: no continuation, the next
    candidate simply replaces the pending one (the vendor's newest client).
    ``repeat_candidates``: send each candidate a second time, unchanged, halfway
    between the eager and the final threshold (clients must de-duplicate).
    """

    utterance_end_ms: int = 300
    continuation: bool = True
    repeat_candidates: bool = False


class TurnsSession:
    """The ``/turns`` endpoint: a turn state machine over utterances and silence.

    Per turn: ``turn_start`` when speech starts; ``turn_end_candidate`` (whole
    turn so far) once trailing silence reaches the eager threshold and the
    turn's finals are in; ``turn_continuation`` if speech resumes before the
    turn ends (then another candidate later); ``turn_end`` once silence reaches
    the final threshold (see :func:`turn_silence_ms`). Audio is stepped through
    the recognizer on a 10 ms grid so the thresholds are met at the same audio
    positions for any split of the stream.
    """

    def __init__(
        self,
        params: StreamParams,
        recognizer: Recognizer,
        *,
        utterance_end_ms: int = 300,
        options: TurnOptions | None = None,
    ) -> None:
        self._recognizer = recognizer
        self._render = _Renderer(params, confidence=False)  # no confidence on turns
        self._options = options or TurnOptions(utterance_end_ms=utterance_end_ms)
        end_ms = self._options.utterance_end_ms
        self.eager_ms = turn_silence_ms(params.eager, end_ms)
        self.final_ms = turn_silence_ms(params.final, end_ms)
        self.repeat_ms = (self.eager_ms + self.final_ms) // 2
        self._buffer = b""
        self._open = False  # turn_start sent, turn_end not yet
        self._candidate: str | None = None  # the pending candidate frame (not void)
        self._repeated = False
        self._finals: list[Hypothesis] = []

    def feed(self, pcm: bytes) -> list[Output]:
        """Recognize ``pcm``; return the turn events (and jobs) it produced."""
        self._buffer += pcm
        frames: list[Output] = []
        whole = len(self._buffer) - len(self._buffer) % _STEP_BYTES
        for offset in range(0, whole, _STEP_BYTES):
            step = self._buffer[offset : offset + _STEP_BYTES]
            frames += self._events(self._recognizer.feed(step))
            frames += self._silence()
        self._buffer = self._buffer[whole:]
        return frames

    def flush(self, request_id: str | None) -> list[Output]:
        """Finish the pending turn (candidate, then ``turn_end``) and confirm.

        The ``flush_confirmation`` is an emulator choice (protocol page: no
        source shows one on turns; clients must not depend on it).
        """
        tail, self._buffer = self._buffer, b""
        frames = self._events(self._recognizer.feed(tail)) if tail else []
        frames += self._events(self._recognizer.flush())
        return frames + self._events(self._recognizer.mark(_Flush(request_id)))

    def decoded(self, job: DecodeJob, words: Sequence[Word]) -> list[Output]:
        """A job came back: its events, then whatever the silence so far allows."""
        return self._events(self._recognizer.decoded(job, words)) + self._silence()

    def _events(self, events: Sequence[RecognizerEvent]) -> list[Output]:
        from emulator.recognizers import Decode, Final, Marked, SpeechStarted

        frames: list[Output] = []
        for event in events:
            if isinstance(event, SpeechStarted | Final):
                frames += self._speech()
            if isinstance(event, Final):
                self._finals.append(event.hypothesis)
            elif isinstance(event, Decode):
                frames.append(event.job)
            elif isinstance(event, Marked) and isinstance(event.token, _Flush):
                frames += self._finish_turn(event.token.request_id)
        return frames

    def _finish_turn(self, request_id: str | None) -> list[Output]:
        frames: list[Output] = []
        if self._open:
            if self._candidate is None:
                frames.append(self._candidate_frame())
            frames.append(self._end())
        return [*frames, FlushConfirmation(id=request_id).to_json()]

    def _speech(self) -> list[Output]:
        if not self._open:
            self._open = True
            return [TurnStart().to_json()]
        if self._candidate is not None:
            self._candidate = None  # the pending candidate is void (protocol page)
            if self._options.continuation:
                return [TurnContinuation().to_json()]
        return []

    def _silence(self) -> list[Output]:
        recognizer = self._recognizer
        if not self._open or not self._finals or recognizer.in_utterance:
            return []
        silence = recognizer.trailing_silence_ms
        frames: list[Output] = []
        if self._candidate is None and silence >= self.eager_ms:
            frames.append(self._candidate_frame())
        if self._candidate is not None and self._repeat_due(silence):
            self._repeated = True
            frames.append(self._candidate)
        if self._candidate is not None and silence >= self.final_ms:
            frames.append(self._end())
        return frames

    def _repeat_due(self, silence: int) -> bool:
        wanted = self._options.repeat_candidates and not self._repeated
        return wanted and self.repeat_ms <= silence < self.final_ms

    def _candidate_frame(self) -> str:
        finals = self._finals
        render = self._render
        fields: dict[str, object] = {}
        if finals:
            start = finals[0].start_ms
            end = finals[-1].start_ms + finals[-1].duration_ms
            fields.update(render.timing(start, end - start))
            fields.update(render.language(finals[-1], final=True))
            fields.update(render.words(finals))
        text = " ".join(h.text for h in finals if h.text)
        frame = TurnEndCandidate.model_validate({"text": text, **fields}).to_json()
        self._candidate, self._repeated = frame, False
        return frame

    def _end(self) -> str:
        self._open, self._candidate = False, None
        self._finals = []
        return TurnEnd().to_json()


def create_session(
    params: StreamParams,
    recognizer: Recognizer,
    *,
    utterance_end_ms: int = 300,
    turns: TurnOptions | None = None,
) -> Session:
    """The session for ``params.endpoint``."""
    if params.endpoint == "turns":
        options = turns or TurnOptions(utterance_end_ms=utterance_end_ms)
        return TurnsSession(params, recognizer, options=options)
    return RealtimeSession(params, recognizer)


# --------------------------------------------------------------------------- connection


@dataclass(frozen=True)
class Send:
    """Send this text frame."""

    frame: str


@dataclass(frozen=True)
class Close:
    """Close the WebSocket with ``code`` and a short ``reason``; stop reading."""

    code: int
    reason: str


@dataclass(frozen=True)
class Drop:
    """Fault: end the connection abruptly. ``code`` None: abort TCP, no close frame."""

    code: int | None = None


@dataclass(frozen=True)
class Hang:
    """Fault: go silent (stop reading and sending) but keep TCP open."""


@dataclass(frozen=True)
class Decode:
    """Run ``job`` (in a worker process), then call :meth:`Connection.decoded`."""

    job: DecodeJob


Action = Send | Close | Drop | Hang | Decode


class Connection:
    """One WebSocket connection's logic: decoding, recognition, audio-time faults.

    Feed frames in arrival order; carry out the returned actions in order. After
    a :class:`Close`, :class:`Drop` or :class:`Hang` every later call returns
    ``[]``: the pump must stop feeding. ``audio_ms`` is the decoded audio
    accepted so far (16 kHz time), the clock of ``drop_after_ms``/``hang_after_ms``.
    """

    def __init__(
        self,
        session: Session,
        audio: _AudioDecoder,
        *,
        drop_after_ms: int | None = None,
        drop_close_code: int | None = None,
        hang_after_ms: int | None = None,
    ) -> None:
        self._session = session
        self._audio = audio
        self._drop_after = drop_after_ms
        self._drop_code = drop_close_code
        self._hang_after = hang_after_ms
        self._bytes = 0
        self._closed = False
        self.done = False

    @property
    def audio_ms(self) -> int:
        """Milliseconds of decoded audio accepted on this connection."""
        return self._bytes // 32

    def receive_bytes(self, data: bytes) -> list[Action]:
        """An audio frame arrived."""
        if self.done:
            return []
        try:
            pcm = self._audio.feed(data)
        except DecodeError as exc:
            return self._finish(Close(CLOSE_INVALID_DATA, _reason("undecodable audio", exc.detail)))
        limit, fault = self._limit()
        if limit is not None:
            pcm = pcm[: max(0, limit - self._bytes)]
        self._bytes += len(pcm)
        actions = _actions(self._session.feed(pcm)) if pcm else []
        if fault is not None and limit is not None and self._bytes >= limit:
            actions.append(self._finish(fault)[0])
        return actions

    def receive_text(self, text: str) -> list[Action]:
        """A text frame arrived: a ``flush_request``; unknown types are ignored."""
        if self.done:
            return []
        try:
            request = parse_client_message(text)
        except MalformedMessage:
            return self._finish(Close(CLOSE_INVALID_DATA, "malformed text frame"))
        if request is None:
            return []
        return _actions(self._session.flush(request.id))

    def decoded(self, job: DecodeJob, words: Sequence[Word]) -> list[Action]:
        """A :class:`Decode` job finished with ``words``."""
        if self.done:
            return []
        return _actions(self._session.decoded(job, words))

    def close(self) -> None:
        """Release the decoder when the connection has ended (idempotent)."""
        self.done = True
        if not self._closed:
            self._closed = True
            self._audio.close()

    def _limit(self) -> tuple[int | None, Action | None]:
        """The earliest audio-time fault: (byte limit, action at the limit)."""
        candidates: list[tuple[int, Action]] = []
        if self._drop_after is not None:
            candidates.append((self._drop_after * 32, Drop(self._drop_code)))
        if self._hang_after is not None:
            candidates.append((self._hang_after * 32, Hang()))
        if not candidates:
            return None, None
        return min(candidates, key=lambda item: item[0])

    def _finish(self, action: Action) -> list[Action]:
        self.done = True
        return [action]


def _actions(outputs: Sequence[Output]) -> list[Action]:
    return [Send(o) if isinstance(o, str) else Decode(o) for o in outputs]


def _reason(prefix: str, detail: str) -> str:
    # Close reasons are limited to 123 bytes (RFC 6455 5.5); keep them short.
    return f"{prefix}: {detail}"[:120]
