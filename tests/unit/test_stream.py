"""ChannelStream: replay buffer, rebasing, coverage, flushes and turns (no I/O)."""

from __future__ import annotations

from schemas.events import SessionEvent, TranscriptEvent, TurnEvent
from schemas.wire import (
    FlushConfirmation,
    FlushRequest,
    StreamParams,
    Transcript,
    TurnContinuation,
    TurnEnd,
    TurnEndCandidate,
    TurnStart,
    WireWord,
)
from workers.stream import MAX_FRAME_BYTES, ChannelStream

RATE = 16000
MS = RATE // 1000 * 2  # bytes of pcm_s16le mono per millisecond


def stream(endpoint: str = "realtime") -> ChannelStream:
    params = StreamParams(
        endpoint=endpoint,  # type: ignore[arg-type]
        encoding="pcm_s16le",
        sample_rate=RATE,
        include_timestamps=True,
    )
    return ChannelStream("call-1", params)


def audio(ms: int, value: int = 1) -> bytes:
    return bytes([value, 0]) * (ms * MS // 2)


def sent(s: ChannelStream) -> list[bytes | FlushRequest]:
    return list(s.outgoing())


def final(text: str, start: int, duration: int) -> Transcript:
    return Transcript(
        text=text,
        start_ms=start,
        duration_ms=duration,
        words=(WireWord(text=text, start_ms=start, duration_ms=duration, confidence=0.9),),
    )


def test_nothing_is_sent_before_a_connection() -> None:
    s = stream()
    s.push(audio(100))
    assert sent(s) == []


def test_audio_is_sent_once_in_order() -> None:
    s = stream()
    s.connected(None)
    s.push(audio(100, 1))
    s.push(audio(50, 2))
    assert b"".join(x for x in sent(s) if isinstance(x, bytes)) == audio(100, 1) + audio(50, 2)
    assert sent(s) == []


def test_partial_frames_wait_for_their_second_byte() -> None:
    s = stream()
    s.connected(None)
    s.push(b"\x01")
    assert sent(s) == []
    s.push(b"\x02\x03")
    assert sent(s) == [b"\x01\x02"]
    assert s.frames_in == 1


def test_large_replays_are_cut_into_bounded_frames() -> None:
    s = stream()
    s.push(audio(5000))
    s.connected(None)
    chunks = sent(s)
    assert all(isinstance(c, bytes) and len(c) <= MAX_FRAME_BYTES for c in chunks)
    assert sum(len(c) for c in chunks if isinstance(c, bytes)) == len(audio(5000))


def test_final_covers_its_audio_and_is_session_absolute_after_reconnect() -> None:
    s = stream()
    s.connected(None)
    s.push(audio(3000))
    sent(s)
    [event] = s.on_message(final("alpha", 1000, 200))
    assert isinstance(event, TranscriptEvent)
    assert event.start_ms == 1000
    assert s.covered == 1200 * RATE // 1000
    # The connection drops: everything after 1200 ms is replayed on the next one,
    # whose times count from 1200 ms.
    s.disconnected()
    assert s.connected("connection_lost") == "connection_lost"  # a reconnect, with its reason
    replay = b"".join(x for x in sent(s) if isinstance(x, bytes))
    assert replay == audio(1800)
    [again] = s.on_message(final("bravo", 500, 200))
    assert isinstance(again, TranscriptEvent)
    assert again.start_ms == 1700
    assert again.words[0].start_ms == 1700
    assert s.stats.reconnects == 1
    assert s.stats.finals == 2


def test_same_final_after_replay_has_the_same_event_id() -> None:
    first, second = stream(), stream()
    for s in (first, second):
        s.connected(None)
        s.push(audio(2000))
        sent(s)
    [a] = first.on_message(final("alpha", 1000, 200))
    second.on_message(final("x", 0, 500))
    second.disconnected()
    second.connected("drop")
    [b] = second.on_message(final("alpha", 500, 200))
    assert a.event_id == b.event_id


def test_interims_do_not_cover() -> None:
    s = stream()
    s.connected(None)
    s.push(audio(1000))
    sent(s)
    [event] = s.on_message(Transcript(text="al", is_final=False, start_ms=0, duration_ms=100))
    assert isinstance(event, TranscriptEvent)
    assert not event.is_final
    assert s.covered == 0


def test_empty_final_covers_without_an_event() -> None:
    s = stream()
    s.connected(None)
    s.push(audio(1000))
    sent(s)
    assert s.on_message(final("", 0, 400)) == []
    assert s.covered == 400 * RATE // 1000


def test_flush_is_sent_in_order_and_its_confirmation_covers() -> None:
    s = stream()
    s.connected(None)
    s.push(audio(100))
    flush_id = s.request_flush(user=True)
    s.push(audio(100, 2))
    out = sent(s)
    assert out == [audio(100), FlushRequest(id=flush_id), audio(100, 2)]
    [event] = s.on_message(FlushConfirmation(id=flush_id))
    assert isinstance(event, SessionEvent)
    assert event.type == "flush_confirmed"
    assert event.position_ms == 100
    assert s.covered == 100 * RATE // 1000
    assert s.pending_flushes == 0


def test_unconfirmed_flush_is_sent_again_after_reconnect() -> None:
    s = stream()
    s.connected(None)
    s.push(audio(100))
    flush_id = s.request_flush(user=False)
    sent(s)
    s.disconnected()
    s.connected("drop")
    assert sent(s) == [audio(100), FlushRequest(id=flush_id)]
    assert s.on_message(FlushConfirmation(id=flush_id)) == []  # internal: no event
    assert s.pending_flushes == 0


def test_foreign_flush_confirmation_is_ignored() -> None:
    s = stream()
    s.connected(None)
    assert s.on_message(FlushConfirmation(id=None)) == []
    assert s.on_message(FlushConfirmation(id="other")) == []


def test_turn_order_and_coverage() -> None:
    s = stream("turns")
    s.connected(None)
    s.push(audio(3000))
    sent(s)
    kinds = []
    for message in (
        TurnStart(),
        TurnEndCandidate(text="alpha", start_ms=200, duration_ms=300),
        TurnContinuation(),
        TurnEndCandidate(text="alpha bravo", start_ms=200, duration_ms=900),
        TurnEnd(),
    ):
        for event in s.on_message(message):
            assert isinstance(event, TurnEvent)
            assert event.turn_index == 0
            kinds.append(event.type)
    assert kinds == [
        "turn_start",
        "turn_end_candidate",
        "turn_continuation",
        "turn_end_candidate",
        "turn_end",
    ]
    assert s.covered == 1100 * RATE // 1000
    assert s.turn_index == 1
    assert not s.turn_open


def test_turn_survives_a_reconnect_without_a_second_start() -> None:
    s = stream("turns")
    s.connected(None)
    s.push(audio(3000))
    sent(s)
    [start] = s.on_message(TurnStart())
    s.disconnected()
    s.connected("drop")
    assert s.on_message(TurnStart()) == []  # the replayed turn is the same turn
    [candidate] = s.on_message(TurnEndCandidate(text="alpha", start_ms=200, duration_ms=300))
    [end] = s.on_message(TurnEnd())
    assert isinstance(start, TurnEvent)
    assert isinstance(end, TurnEvent)
    assert start.turn_index == end.turn_index == 0
    assert isinstance(candidate, TurnEvent)
    assert candidate.start_ms == 200


def test_turn_end_without_candidate_is_ignored() -> None:
    s = stream("turns")
    s.connected(None)
    assert s.on_message(TurnEnd()) == []
    assert s.on_message(TurnContinuation()) == []


def test_repeated_candidates_without_continuations_give_one_event_each() -> None:
    """The newest turns variant: no turn_continuation, and the same candidate
    sent again as the turn goes on; downstream sees each candidate once."""
    s = stream("turns")
    s.connected(None)
    s.push(audio(3000))
    sent(s)
    first = TurnEndCandidate(text="alpha", start_ms=200, duration_ms=300)
    longer = TurnEndCandidate(text="alpha bravo", start_ms=200, duration_ms=900)
    kinds = []
    for message in (TurnStart(), first, first, longer, longer, TurnEnd()):
        kinds += [event.type for event in s.on_message(message)]
    assert kinds == ["turn_start", "turn_end_candidate", "turn_end_candidate", "turn_end"]
    assert s.turn_index == 1
