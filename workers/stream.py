"""One upstream stream of a session (sans-I/O): audio in, upstream messages in,
output events and coverage out.

A :class:`ChannelStream` is one lineage of upstream connections for one
session (one per channel in split mode). It owns:

- the uncovered audio (``covered`` .. ``frames_in``, in frames at the
  upstream rate), kept for replay after a reconnect;
- the rebasing of each connection's times onto session time: a connection
  opened when ``covered == F`` starts at session frame ``F``, and its
  ``start_ms`` are offsets from there (reson8-protocol.md, "Server to client":
  times are per connection);
- which audio is *covered*: finalized by a final transcript (realtime), a
  committed turn (turns) or a confirmed flush;
- turn state across reconnects, so no turn is left open or started twice.

The session drives it: call :meth:`connected` when a connection opens, send
what :meth:`outgoing` returns, feed every upstream message to
:meth:`on_message` and emit the events it returns, then :meth:`mark` the
coverage those events account for and :meth:`make_durable` that mark once they
are acknowledged; call :meth:`disconnected` when the connection is lost.
Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from schemas.events import SessionEvent, TranscriptEvent, TurnEvent, Word, event_id
from schemas.wire import (
    FlushConfirmation,
    FlushRequest,
    ServerMessage,
    StreamParams,
    Transcript,
    TurnContinuation,
    TurnEnd,
    TurnEndCandidate,
    TurnStart,
    WireWord,
)
from workers.frames import FrameAligner
from workers.vad import trailing_silence_ms

Event = TranscriptEvent | TurnEvent | SessionEvent
MAX_FRAME_BYTES = 64 * 1024  # one WebSocket message at most; replay is cut into these


@dataclass
class _Flush:
    flush_id: str
    frame: int
    user: bool  # requested by a `flush`/`end` record (emits flush_confirmed)
    sent: bool = False  # sent on the current connection


@dataclass
class _Turn:
    index: int = 0
    open: bool = False
    candidate: TurnEndCandidate | None = None
    candidate_end: int = 0  # session frame where the pending candidate ends
    base_ms: int = 0  # session ms where the turn's audio region began


@dataclass(frozen=True, slots=True)
class Durable:
    """A stream's coverage at some point of its output (see :meth:`ChannelStream.mark`)."""

    covered: int
    turn_index: int
    finals: int


@dataclass
class StreamStats:
    """Counters reported in ``session_ended``."""

    finals: int = 0
    reconnects: int = 0
    connections: int = 0
    flushes_confirmed: int = 0
    max_uncovered: int = 0  # frames: the most audio this stream held uncovered


@dataclass
class ChannelStream:
    """State of one upstream stream. See the module docstring for the protocol."""

    session_id: str
    params: StreamParams
    channel: int | None = None
    label: str | None = None
    start_frame: int = 0
    next_turn_index: int = 0
    # A resumed stream (takeover from a checkpoint): audio before this session
    # frame is already covered; it is decoded again but neither kept nor sent.
    resume_covered: int = 0
    resumed: bool = False
    flush_seq: int = 0
    frames_in: int = field(init=False)
    covered: int = field(init=False)
    stats: StreamStats = field(default_factory=StreamStats)

    def __post_init__(self) -> None:
        self.frames_in = self.start_frame
        self.covered = max(self.start_frame, self.resume_covered)
        self.durable = self.covered  # coverage whose events are acknowledged by the broker
        self.durable_turn = self.next_turn_index  # turn index at ``durable``
        self.durable_finals = self.stats.finals
        self._audio = bytearray()  # frames [covered, frames_in)
        self._aligner = FrameAligner(self.frame_bytes)
        self._silence_at = (-1, 0)  # (frames_in, trailing silence ms) last measured
        self._conn_base: int | None = None
        self._connected_here = False
        self._sent = self.covered
        self._flushes: list[_Flush] = []
        self._turn = _Turn(index=self.next_turn_index, base_ms=self.to_ms(self.covered))

    # ------------------------------------------------------------------ units

    @property
    def rate(self) -> int:
        return self.params.sample_rate

    @property
    def frame_bytes(self) -> int:
        """Bytes per frame: 2 per sample for pcm_s16le, 1 for G.711, times channels."""
        width = 2 if self.params.encoding == "pcm_s16le" else 1
        return width * self.params.channels

    def to_ms(self, frame: int) -> int:
        return frame * 1000 // self.rate

    def to_frame(self, ms: int) -> int:
        return ms * self.rate // 1000

    @property
    def sent_frames(self) -> int:
        """Session frame up to which the current connection has been sent audio."""
        return self._sent

    @property
    def unsent(self) -> bool:
        """The open connection has audio or a flush still to send."""
        return self._conn_base is not None and (
            self._sent < self.frames_in or any(not f.sent for f in self._flushes)
        )

    @property
    def uncovered_frames(self) -> int:
        return self.frames_in - self.covered

    @property
    def trailing_silence_ms(self) -> int:
        """How much silence ends the audio held (local VAD, measured when asked
        and remembered until more audio comes)."""
        at, silent = self._silence_at
        if at != self.frames_in:
            params = self.params
            silent = trailing_silence_ms(self._audio, self.rate, params.encoding, params.channels)
            self._silence_at = (self.frames_in, silent)
        return silent

    def flushable_at_silence(self, min_silence_ms: int) -> bool:
        """True when a flush now would cut no word (the tail is silent), leave
        no turn half done (turns: a flush ends the turn) and cover something."""
        return (
            self.uncovered_frames > 0
            and not self._flushes
            and self.trailing_silence_ms >= min_silence_ms
            and not (self.params.endpoint == "turns" and self._turn.open)
        )

    @property
    def turn_open(self) -> bool:
        return self._turn.open

    @property
    def turn_index(self) -> int:
        return self._turn.index

    # ------------------------------------------------------------------ input side

    def push(self, audio: bytes) -> int:
        """Append audio in the upstream encoding; returns the new ``frames_in``."""
        whole = self._aligner.take(audio)
        skip = min(len(whole) // self.frame_bytes, max(0, self.covered - self.frames_in))
        if skip:  # resumed: this audio was covered before the takeover
            self.frames_in += skip
            whole = whole[skip * self.frame_bytes :]
        self._audio += whole
        self.frames_in += len(whole) // self.frame_bytes
        self.stats.max_uncovered = max(self.stats.max_uncovered, self.frames_in - self.covered)
        return self.frames_in

    def request_flush(self, *, user: bool) -> str:
        """Queue a flush at the current input position; returns its id.

        The flush is sent (again after a reconnect) in order with the audio;
        its confirmation covers everything before it.
        """
        self.flush_seq += 1
        flush_id = f"{self.session_id}:{self.channel if self.channel is not None else 'm'}:" + (
            f"{self.frames_in}:{self.flush_seq}"
        )
        self._flushes.append(_Flush(flush_id, self.frames_in, user))
        return flush_id

    @property
    def pending_flushes(self) -> int:
        return len(self._flushes)

    def is_pending(self, flush_id: str) -> bool:
        return any(f.flush_id == flush_id for f in self._flushes)

    def events_emitted(self) -> None:
        """The events of every message so far are acknowledged by the broker:
        what they cover may now be checkpointed and committed (never before,
        or a crash in between would lose a final)."""
        self.make_durable(self.mark())

    def mark(self) -> Durable:
        """The coverage that the events returned so far account for; pass it to
        :meth:`make_durable` once those events are acknowledged."""
        return Durable(self.covered, self._turn.index, self.stats.finals)

    def make_durable(self, mark: Durable) -> bool:
        """The events up to ``mark`` are acknowledged by the broker; True when
        that moved the durable coverage (a checkpoint is due)."""
        moved = (mark.covered, mark.turn_index, mark.finals) != (
            self.durable,
            self.durable_turn,
            self.durable_finals,
        )
        if mark.covered >= self.durable:
            self.durable = mark.covered
            self.durable_turn = mark.turn_index
            self.durable_finals = mark.finals
        return moved and mark.covered >= self.durable

    @property
    def answer_due(self) -> bool:
        """True when the current connection owes an answer: a flush went out
        and is not confirmed (the stall detector's question)."""
        return self._conn_base is not None and any(f.sent for f in self._flushes)

    # ------------------------------------------------------------------ connection side

    def connected(self, reason: str | None) -> str | None:
        """A connection opened: replay starts at ``covered``. Returns the
        reason of an ``upstream_reconnected`` (None for the first connection:
        ``upstream_connected``); ``takeover`` for the first connection after
        another worker's checkpoint."""
        self._conn_base = self.covered
        self._sent = self.covered
        for flush in self._flushes:
            flush.sent = False  # the new connection must finalize them again
        first = self.stats.connections == 0
        if self.resumed and not self._connected_here:
            reason = "takeover"
        self._connected_here = True
        self.stats.connections += 1
        if first:
            return None
        self.stats.reconnects += 1
        return reason or "connection_lost"

    def disconnected(self) -> None:
        """The connection is gone; everything uncovered will be replayed."""
        self._conn_base = None

    def outgoing(self) -> Iterator[bytes | FlushRequest]:
        """What to send now, in order: audio frames and flush requests at their
        positions. Call after :meth:`push`/:meth:`request_flush` and after
        :meth:`connected`; what it yields counts as sent."""
        if self._conn_base is None:
            return
        for flush in self._flushes:
            if not flush.sent:
                yield from self._audio_until(flush.frame)
                flush.sent = True
                yield FlushRequest(id=flush.flush_id)
        yield from self._audio_until(self.frames_in)

    def _audio_until(self, frame: int) -> Iterator[bytes]:
        while self._sent < frame:
            start = (self._sent - self.covered) * self.frame_bytes
            stop = min((frame - self.covered) * self.frame_bytes, start + MAX_FRAME_BYTES)
            stop -= (stop - start) % self.frame_bytes
            chunk = bytes(self._audio[start:stop])
            self._sent += len(chunk) // self.frame_bytes
            yield chunk

    # ------------------------------------------------------------------ upstream messages

    def on_message(self, message: ServerMessage) -> list[Event]:
        """Interpret one upstream message; returns the events to emit, in order."""
        if isinstance(message, Transcript):
            return self._on_transcript(message)
        if isinstance(message, FlushConfirmation):
            return self._on_flush_confirmation(message.id)
        if isinstance(message, TurnStart):
            return self._on_turn_start()
        if isinstance(message, TurnEndCandidate):
            return self._on_candidate(message)
        if isinstance(message, TurnContinuation):
            return self._on_continuation()
        if isinstance(message, TurnEnd):
            return self._on_turn_end()
        return []

    def _base_ms(self) -> int:
        return self.to_ms(self._conn_base if self._conn_base is not None else self.covered)

    def _rebase_words(self, words: tuple[WireWord, ...] | None) -> tuple[Word, ...]:
        base = self._base_ms()
        return tuple(
            Word(
                text=w.text,
                start_ms=None if w.start_ms is None else w.start_ms + base,
                duration_ms=w.duration_ms,
                confidence=w.confidence,
            )
            for w in words or ()
        )

    def _on_transcript(self, msg: Transcript) -> list[Event]:
        start = None if msg.start_ms is None else msg.start_ms + self._base_ms()
        if msg.is_final:
            if start is not None:
                self._cover(self.to_frame(start + (msg.duration_ms or 0)))
            if not msg.text.strip():
                return []
            self.stats.finals += 1
            eid = event_id(self.session_id, self.channel, start or 0, "final")
        else:
            eid = uuid.uuid4().hex  # interims are superseded, never deduplicated
        return [
            TranscriptEvent(
                event_id=eid,
                session_id=self.session_id,
                channel=self.channel,
                label=self.label,
                is_final=msg.is_final,
                text=msg.text,
                start_ms=start,
                duration_ms=msg.duration_ms,
                words=self._rebase_words(msg.words),
                language=msg.language,
                speaker_id=msg.speaker_id,
            )
        ]

    def _cover(self, frame: int) -> None:
        """Mark audio before ``frame`` as covered and drop it from the replay buffer."""
        frame = min(frame, self._sent if self._conn_base is not None else self.covered)
        if frame <= self.covered:
            return
        del self._audio[: (frame - self.covered) * self.frame_bytes]
        self.covered = frame

    def _on_flush_confirmation(self, flush_id: str | None) -> list[Event]:
        done = [f for f in self._flushes if f.flush_id == flush_id]
        if not done:
            return []  # unknown or id-less confirmation: not ours
        flush = done[0]
        self._flushes.remove(flush)
        position = flush.frame
        self._cover(position)
        if self.params.endpoint == "turns" and self._turn.open:
            # turns: a flush finishes the pending turn (protocol page,
            # "Client to server"); close ours if turn_end did not arrive.
            self._turn.open = False
            self._turn.candidate = None
            self._turn.index += 1
        self.stats.flushes_confirmed += 1
        if not flush.user:
            return []
        return [self._flush_event(flush.flush_id, position)]

    def _flush_event(self, flush_id: str, position: int) -> SessionEvent:
        return SessionEvent(
            event_id=event_id(self.session_id, self.channel, self.to_ms(position), "flush"),
            session_id=self.session_id,
            channel=self.channel,
            label=self.label,
            type="flush_confirmed",
            flush_id=flush_id,
            position_ms=self.to_ms(position),
        )

    # ------------------------------------------------------------------ turns

    def _turn_event(self, kind: str, position_ms: int, **fields: object) -> TurnEvent:
        return TurnEvent(
            event_id=event_id(
                self.session_id, self.channel, position_ms, f"{kind}:{self._turn.index}"
            ),
            session_id=self.session_id,
            channel=self.channel,
            label=self.label,
            type=kind,
            turn_index=self._turn.index,
            **fields,
        )

    def _on_turn_start(self) -> list[Event]:
        if self._turn.open:
            # After a reconnect the server starts the replayed turn again: it is
            # the same turn for our consumers (ARCHITECTURE.md, no turn twice).
            return []
        self._turn.open = True
        self._turn.base_ms = self.to_ms(self.covered)
        return [self._turn_event("turn_start", self._turn.base_ms)]

    def _on_candidate(self, msg: TurnEndCandidate) -> list[Event]:
        if self._turn.open and self._turn.candidate == msg:
            return []  # the service may repeat a candidate: one event downstream
        events = [] if self._turn.open else self._on_turn_start()
        start = None if msg.start_ms is None else msg.start_ms + self._base_ms()
        end_ms = (start or self._base_ms()) + (msg.duration_ms or 0)
        self._turn.candidate = msg
        self._turn.candidate_end = self.to_frame(end_ms)
        events.append(
            self._turn_event(
                "turn_end_candidate",
                end_ms,
                text=msg.text,
                start_ms=start,
                duration_ms=msg.duration_ms,
                words=self._rebase_words(msg.words),
                language=msg.language,
            )
        )
        return events

    def _on_continuation(self) -> list[Event]:
        if self._turn.candidate is None:
            return []
        end_ms = self.to_ms(self._turn.candidate_end)
        self._turn.candidate = None
        return [self._turn_event("turn_continuation", end_ms)]

    def _on_turn_end(self) -> list[Event]:
        candidate = self._turn.candidate
        if not self._turn.open or candidate is None:
            return []
        end_ms = self.to_ms(self._turn.candidate_end)
        event = self._turn_event(
            "turn_end",
            end_ms,
            text=candidate.text,
            start_ms=None if candidate.start_ms is None else end_ms - (candidate.duration_ms or 0),
            duration_ms=candidate.duration_ms,
            language=candidate.language,
        )
        self._cover(self._turn.candidate_end)
        self.stats.finals += 1  # a committed turn is the turns endpoint's final
        self._turn = _Turn(index=self._turn.index + 1, base_ms=end_ms)
        return [event]
