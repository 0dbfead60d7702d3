"""Sans-I/O emulator sessions: audio and flush requests in, server frames out.

Nothing here touches a socket or a clock. ``emulator.server`` is the pump: it
feeds every binary frame to :meth:`Connection.receive_bytes`, every text frame to
:meth:`Connection.receive_text`, and carries out the returned actions in order.

- :class:`RealtimeSession` renders recognizer results as ``transcript`` frames
  (protocol page, "Server to client").
- :class:`TurnsSession` turns the recognizer's utterances and silences into
  ``turn_start`` / ``turn_end_candidate`` / ``turn_continuation`` /
  ``turn_end``. Thresholds, in ms of trailing silence (documented mapping, see
  :func:`turn_silence_ms`): ``silence = max(utterance_end_ms, 100 + 800 * p)``,
  monotonic in the probability ``p``, so eager <= final always holds.
- :class:`Connection` adds the audio decoding and the audio-time faults
  (``drop_after_ms``, ``hang_after_ms``) on top of a session.
"""

from __future__ import annotations

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

__all__ = [
    "CLOSE_INVALID_DATA",
    "Action",
    "Close",
    "Connection",
    "Drop",
    "Hang",
    "RealtimeSession",
    "Send",
    "Session",
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


def turn_silence_ms(probability: float, utterance_end_ms: int) -> int:
    """Trailing silence (ms) after which a turn probability is reached.

    ``100 + 800 * p``, never below the recognizer's utterance end (a candidate
    needs the utterance's final first). Defaults: eager 0.5 -> 500 ms,
    final 0.92 -> 836 ms.
    """
    return max(utterance_end_ms, round(100 + 800 * probability))


class _AudioDecoder(Protocol):
    def feed(self, data: bytes) -> bytes: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- sessions


class Session(Protocol):
    """What :class:`Connection` needs from a realtime or turns session."""

    def feed(self, pcm: bytes) -> list[str]:
        """Recognize 16 kHz mono s16le; return the text frames to send."""
        ...

    def flush(self, request_id: str | None) -> list[str]:
        """Finalize buffered audio; frames end with a ``flush_confirmation``."""
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

    def feed(self, pcm: bytes) -> list[str]:
        """Recognize ``pcm``; return the transcripts it produced."""
        return self._frames(self._recognizer.feed(pcm))

    def flush(self, request_id: str | None) -> list[str]:
        """Finalize: the resulting finals, then the ``flush_confirmation``."""
        frames = self._frames(self._recognizer.flush())
        return [*frames, FlushConfirmation(id=request_id).to_json()]

    def _frames(self, events: Sequence[RecognizerEvent]) -> list[str]:
        from emulator.recognizers import Final, Interim

        frames: list[str] = []
        for event in events:
            if isinstance(event, Final):
                frames.append(self._transcript(event.hypothesis, final=True))
            elif isinstance(event, Interim) and self._params.include_interim:
                frames.append(self._transcript(event.hypothesis, final=False))
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


class TurnsSession:
    """The ``/turns`` endpoint: a turn state machine over utterances and silence.

    Per turn: ``turn_start`` when speech starts; ``turn_end_candidate`` (whole
    turn so far) once trailing silence reaches the eager threshold;
    ``turn_continuation`` if speech resumes before the turn ends (then another
    candidate later); ``turn_end`` once silence reaches the final threshold.
    Audio is stepped through the recognizer on a 10 ms grid so the thresholds
    are met at the same audio positions for any split of the stream.
    """

    def __init__(
        self, params: StreamParams, recognizer: Recognizer, *, utterance_end_ms: int = 300
    ) -> None:
        self._recognizer = recognizer
        self._render = _Renderer(params, confidence=False)  # no confidence on turns
        self.eager_ms = turn_silence_ms(params.eager, utterance_end_ms)
        self.final_ms = turn_silence_ms(params.final, utterance_end_ms)
        self._buffer = b""
        self._open = False  # turn_start sent, turn_end not yet
        self._candidate = False  # a candidate is pending (not void)
        self._finals: list[Hypothesis] = []

    def feed(self, pcm: bytes) -> list[str]:
        """Recognize ``pcm``; return the turn events it produced."""
        self._buffer += pcm
        frames: list[str] = []
        whole = len(self._buffer) - len(self._buffer) % _STEP_BYTES
        for offset in range(0, whole, _STEP_BYTES):
            step = self._buffer[offset : offset + _STEP_BYTES]
            frames += self._events(self._recognizer.feed(step))
            frames += self._silence()
        self._buffer = self._buffer[whole:]
        return frames

    def flush(self, request_id: str | None) -> list[str]:
        """Finish the pending turn (candidate, then ``turn_end``) and confirm.

        The ``flush_confirmation`` is an emulator choice (protocol page: no
        source shows one on turns; clients must not depend on it).
        """
        tail, self._buffer = self._buffer, b""
        frames = self._events(self._recognizer.feed(tail)) if tail else []
        frames += self._events(self._recognizer.flush())
        if self._open:
            if not self._candidate:
                frames.append(self._candidate_frame())
            frames.append(self._end())
        return [*frames, FlushConfirmation(id=request_id).to_json()]

    def _events(self, events: Sequence[RecognizerEvent]) -> list[str]:
        from emulator.recognizers import Final, SpeechStarted

        frames: list[str] = []
        for event in events:
            if isinstance(event, SpeechStarted | Final):
                frames += self._speech()
            if isinstance(event, Final):
                self._finals.append(event.hypothesis)
        return frames

    def _speech(self) -> list[str]:
        if not self._open:
            self._open = True
            return [TurnStart().to_json()]
        if self._candidate:
            self._candidate = False  # the pending candidate is void (protocol page)
            return [TurnContinuation().to_json()]
        return []

    def _silence(self) -> list[str]:
        recognizer = self._recognizer
        silence = recognizer.trailing_silence_ms
        frames: list[str] = []
        ready = self._open and self._finals and not recognizer.in_utterance
        if ready and not self._candidate and silence >= self.eager_ms:
            frames.append(self._candidate_frame())
        if self._candidate and silence >= self.final_ms:
            frames.append(self._end())
        return frames

    def _candidate_frame(self) -> str:
        self._candidate = True
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
        return TurnEndCandidate.model_validate({"text": text, **fields}).to_json()

    def _end(self) -> str:
        self._open = self._candidate = False
        self._finals = []
        return TurnEnd().to_json()


def create_session(
    params: StreamParams, recognizer: Recognizer, *, utterance_end_ms: int = 300
) -> Session:
    """The session for ``params.endpoint``."""
    if params.endpoint == "turns":
        return TurnsSession(params, recognizer, utterance_end_ms=utterance_end_ms)
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


Action = Send | Close | Drop | Hang


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
        actions: list[Action] = [Send(f) for f in self._session.feed(pcm)] if pcm else []
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
        return [Send(f) for f in self._session.flush(request.id)]

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


def _reason(prefix: str, detail: str) -> str:
    # Close reasons are limited to 123 bytes (RFC 6455 5.5); keep them short.
    return f"{prefix}: {detail}"[:120]
