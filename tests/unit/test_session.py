"""Session: the sans-I/O core, driven directly (no sockets, no Kafka, no clock).

The last tests are a state machine: for any interleaving of records, upstream
messages, disconnects, publishes, checkpoints, ticks and crashes (a new owner
resuming from the last durable checkpoint), every word of the input is
covered by a final exactly once (within the documented at-least-once window
after a crash), timestamps never go back, and acks never pass uncovered audio.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.envelope import RecordHeaders, SessionConfig
from schemas.events import SessionEvent, TranscriptEvent
from schemas.wire import FlushRequest
from tests.unit.fakes import FakeUpstream
from workers.checkpoint import Checkpoint
from workers.errors import InputError, UpstreamClosed, UpstreamRefused
from workers.link import RetryPolicy
from workers.session import LinkKey, Session, SessionPolicy

RATE = 8000
FRAMES_PER_MS = RATE // 1000
KEY: LinkKey = (0, 0)
RAW = SessionConfig(encoding="pcm_s16le", sample_rate=RATE)
POLICY = SessionPolicy(
    idle_flush_s=1.0,
    idle_timeout_s=60.0,
    max_uncovered_s=3.0,
    silence_flush_after_s=1.0,
    silence_flush_ms=30,
    end_timeout_s=5.0,
    retry=RetryPolicy(initial_s=0.01, max_s=0.05, attempts=1000, allowance=1000),
)
AUDIO = RecordHeaders()
END = RecordHeaders(kind="end")


def speech(words: list[tuple[int, int]]) -> tuple[bytes, list[tuple[int, int, int]]]:
    """PCM of ``(silence_ms, word_ms)`` pairs (10 ms units); each word is a
    run of its own sample value. Returns the audio and (value, start, end) ms."""
    out, truth, at = [], [], 0
    for i, (gap, length) in enumerate(words):
        value = 1000 + i
        out.append(b"\x00\x00" * gap * FRAMES_PER_MS)
        out.append(struct.pack("<h", value) * length * FRAMES_PER_MS)
        truth.append((value, at + gap, at + gap + length))
        at += gap + length
    out.append(b"\x00\x00" * 50 * FRAMES_PER_MS)  # trailing silence
    return b"".join(out), truth


# -- direct tests ----------------------------------------------------------------------


def new_session(**kw: object) -> Session:
    return Session("s", 0, POLICY, config=RAW, now=0.0, **kw)  # type: ignore[arg-type]


def events(session: Session) -> list[object]:
    out = []
    for output in session.take_outputs():
        if output.event is not None:
            out.append(output.event)
        session.on_published(output)
    return out


def pump(session: Session, upstream: FakeUpstream, now: float = 0.0) -> None:
    upstream.receive(session.outgoing(KEY, now))
    while upstream.outbox:
        session.on_message(KEY, upstream.outbox.pop(0), now)


def test_a_session_starts_connects_transcribes_and_ends() -> None:
    session = new_session()
    audio, truth = speech([(10, 30), (20, 40)])
    session.on_record(0, AUDIO, audio, now=0.0)
    session.on_record(1, END, b"", now=0.1)
    assert session.link_keys() == [KEY]
    assert session.connect_delay(KEY, 0.1) == 0
    session.on_connected(KEY, 0.1)
    upstream = FakeUpstream()
    pump(session, upstream)
    session.tick(0.2, quiet_s=0.0)
    kinds = [getattr(e, "type", None) for e in events(session)]
    assert kinds[:2] == ["session_started", "upstream_connected"]
    assert kinds[-1] == "session_ended"
    assert session.state == "ended"
    assert session.take_closes() == [(KEY, "ended")]
    finals = [e for e in kinds if e == "transcript"]
    assert len(finals) == len(truth)


def test_a_refusal_fails_the_session_at_once_and_later_records_are_refused() -> None:
    session = new_session()
    session.on_record(0, AUDIO, b"\x00" * 320, now=0.0)
    session.on_connect_failed(KEY, UpstreamRefused(401, code="UNAUTHORIZED"), 0.0)
    assert session.state == "failed"
    assert session.connect_delay(KEY, 0.0) is None
    [failed] = [e for e in events(session) if getattr(e, "type", "") == "session_failed"]
    assert isinstance(failed, SessionEvent)
    assert failed.code == "UNAUTHORIZED"
    with pytest.raises(InputError, match="session_failed"):
        session.on_record(1, AUDIO, b"\x00" * 320, now=0.1)


def test_reconnects_replay_and_name_their_reason() -> None:
    session = new_session()
    audio, truth = speech([(10, 30), (20, 40), (10, 20)])
    session.on_record(0, AUDIO, audio, now=0.0)
    session.on_connected(KEY, 0.0)
    first = FakeUpstream()
    first.receive(session.outgoing(KEY, 0.0))
    session.on_message(KEY, first.outbox[0], 0.0)  # one final arrives, then the drop
    session.on_closed(KEY, UpstreamClosed("dropped", close_code=1006), 0.1)
    delay = session.connect_delay(KEY, 0.1)
    assert delay is not None
    session.on_connected(KEY, 0.1 + delay)
    pump(session, FakeUpstream(), 0.2)
    out = events(session)
    [reconnected] = [e for e in out if getattr(e, "type", "") == "upstream_reconnected"]
    assert isinstance(reconnected, SessionEvent)
    assert reconnected.reason == "closed_1006"
    finals = [e for e in out if isinstance(e, TranscriptEvent)]
    assert [(f.start_ms, f.text) for f in finals] == [(s, f"w{v}") for v, s, _ in truth]


def test_a_silent_connection_owing_a_flush_is_closed_as_stalled() -> None:
    policy = SessionPolicy(retry=RetryPolicy(stall_timeout_s=5.0), idle_flush_s=1.0)
    session = Session("s", 0, policy, config=RAW, now=0.0)
    session.on_record(0, AUDIO, b"\x01\x00" * 800, now=0.0)
    session.on_connected(KEY, 0.0)
    session.outgoing(KEY, 0.0)
    session.tick(1.0, quiet_s=2.0)  # input paused: flush
    assert any(isinstance(i, FlushRequest) for i in session.outgoing(KEY, 1.0))
    session.tick(5.9, quiet_s=0.0)
    assert session.take_closes() == []
    session.tick(6.1, quiet_s=0.0)
    assert session.take_closes() == [(KEY, "stall")]


def test_the_end_timeout_counts_from_what_was_sent_not_from_the_connect() -> None:
    """An ended session whose audio waited to be sent (a slow pump, a long
    connect) is not an upstream that stopped answering: it still gets every
    final; only silence after the last send ends it without them."""
    session = new_session()
    audio, truth = speech([(10, 30)])
    session.on_record(0, AUDIO, audio, now=0.0)
    session.on_record(1, END, b"", now=0.0)
    session.on_connected(KEY, 0.0)
    session.tick(POLICY.end_timeout_s + 1, quiet_s=9.0)
    assert session.state != "ended"
    upstream = FakeUpstream()
    upstream.receive(session.outgoing(KEY, 6.0))  # sent, never answered
    session.tick(6.0 + POLICY.end_timeout_s - 0.1, quiet_s=9.0)
    assert session.state != "ended"
    session.tick(6.0 + POLICY.end_timeout_s, quiet_s=9.0)
    assert session.state == "ended"
    assert [e for e in events(session) if isinstance(e, TranscriptEvent)] == []
    unheard = [m for m in upstream.outbox if getattr(m, "is_final", False)]
    assert len(unheard) == len(truth)  # what the timeout gave up on


def test_a_lagging_partition_never_flushes_mid_word() -> None:
    session = new_session()
    session.on_record(0, AUDIO, struct.pack("<h", 3000) * 4000, now=0.0)  # 0.5 s of speech
    session.on_connected(KEY, 0.0)
    session.outgoing(KEY, 0.0)
    for t in range(1, 30):  # the worker reads nothing for 29 s: input time stands still
        session.tick(float(t), quiet_s=0.0)
    assert not any(isinstance(i, FlushRequest) for i in session.outgoing(KEY, 30.0))
    session.tick(31.0, quiet_s=POLICY.idle_flush_s)  # the input really paused
    assert any(isinstance(i, FlushRequest) for i in session.outgoing(KEY, 31.0))


def test_a_configuration_change_starts_a_new_epoch_at_the_session_time_reached() -> None:
    session = new_session()
    session.on_record(0, AUDIO, b"\x00\x00" * 8000, now=0.0)  # 1 s
    mulaw = RecordHeaders(config_headers={"stt-encoding": "mulaw", "stt-sample-rate": "8000"})
    session.on_record(1, mulaw, b"\xff" * 800, now=0.1)
    assert session.link_keys() == [(0, 0), (1, 0)]
    assert session.params((1, 0)).encoding == "pcm_s16le"  # realtime: G.711 expanded
    session.on_connected((1, 0), 0.1)
    [connected] = [e for e in events(session) if getattr(e, "type", "") == "upstream_connected"]
    assert isinstance(connected, SessionEvent)
    assert connected.position_ms == 1000


def test_warnings_name_the_dead_lettered_record() -> None:
    session = new_session()
    session.warning("bad_header", "stt-kind: unknown kind 'x'", 7)
    [started, warning] = events(session)
    assert getattr(started, "type", "") == "session_started"
    assert isinstance(warning, SessionEvent)
    assert (warning.type, warning.code) == ("session_warning", "bad_header")


def test_records_below_the_resume_offset_are_skipped() -> None:
    saved = Checkpoint(session_id="s", partition=0, offset=5, config=RAW)
    session = Session("s", 0, POLICY, resume=saved, now=0.0)
    assert not session.on_record(4, AUDIO, b"\x00" * 10, now=0.0)
    assert session.on_record(5, AUDIO, b"\x00" * 10, now=0.0)
    assert [e for e in events(session) if getattr(e, "type", "") == "session_started"] == []


# -- the state machine ------------------------------------------------------------------


@dataclass
class World:
    """One session's input, the upstream, the broker and the crashes."""

    audio: bytes
    records: list[tuple[int, RecordHeaders, bytes]]
    session: Session
    now: float = 0.0
    fed: int = 0  # next record to feed
    upstream: FakeUpstream | None = None
    pending: list[object] = field(default_factory=list)  # taken, not yet published
    published: list[list[TranscriptEvent]] = field(default_factory=lambda: [[]])
    durable: Checkpoint | None = None
    crashes: int = 0

    def step(self, op: str) -> None:
        getattr(self, "op_" + op)()

    def op_record(self) -> None:
        if self.fed < len(self.records) and self.session.state == "open":
            offset, headers, audio = self.records[self.fed]
            self.session.on_record(offset, headers, audio, now=self.now)
            self.fed += 1

    def op_connect(self) -> None:
        delay = self.session.connect_delay(KEY, self.now)
        if self.upstream is None and delay is not None and KEY in self.session.link_keys():
            self.now += delay
            self.session.on_connected(KEY, self.now)
            self.upstream = FakeUpstream()

    def op_send(self) -> None:
        if self.upstream is not None:
            self.upstream.receive(self.session.outgoing(KEY, self.now))

    def op_deliver(self) -> None:
        if self.upstream is not None and self.upstream.outbox:
            self.session.on_message(KEY, self.upstream.outbox.pop(0), self.now)

    def op_drop(self) -> None:
        if self.upstream is not None:
            self.upstream = None  # what it had not delivered is lost
            self.session.on_closed(KEY, UpstreamClosed("dropped"), self.now)

    def op_publish(self) -> None:
        for output in self.session.take_outputs():
            if isinstance(output.event, TranscriptEvent):
                self.published[-1].append(output.event)
            self.session.on_published(output)

    def op_checkpoint(self) -> None:
        checkpoint = self.session.checkpoint()
        if checkpoint is None:
            return
        self.session.on_checkpointed(checkpoint)
        self.durable = checkpoint
        self.check_acks()

    def op_tick(self) -> None:
        self.now += 0.5
        quiet = 0.0 if self.fed < len(self.records) else 2.0
        self.session.tick(self.now, quiet)
        for _key, reason in self.session.take_closes():
            if reason == "stall":
                self.op_drop()

    def op_crash(self) -> None:
        """The worker dies; a new owner resumes from the durable checkpoint and
        reads again from the committed offset."""
        self.crashes += 1
        self.upstream = None
        self.session.close()
        saved = self.durable
        if saved is None:
            self.session = Session("s", 0, POLICY, config=RAW, now=self.now)
            self.fed = 0
        else:
            self.session = Session("s", 0, POLICY, resume=saved, now=self.now)
            self.fed = saved.offset
        self.published.append([])

    def check_acks(self) -> None:
        """Records below ack_before hold no audio beyond the durable coverage."""
        covered = min((s.durable for s in self.session.streams), default=0)
        acked_bytes = sum(len(a) for o, _, a in self.records if o < self.session.ack_before)
        assert acked_bytes <= covered * 2

    def finish(self) -> None:
        for _ in range(10_000):
            if self.session.finished and not self.session.has_outputs:
                return
            for op in ("record", "connect", "send", "deliver", "publish", "checkpoint", "tick"):
                self.step(op)
        raise AssertionError("the session did not finish")


def covered_ms(finals: list[TranscriptEvent]) -> list[tuple[int, int, str]]:
    return sorted(
        (f.start_ms or 0, (f.start_ms or 0) + (f.duration_ms or 0), f.text) for f in finals
    )


OPS = ("record", "connect", "send", "deliver", "drop", "publish", "checkpoint", "tick")
words = st.lists(st.tuples(st.integers(1, 30), st.integers(1, 40)), min_size=1, max_size=6)


def world(
    words: list[tuple[int, int]], cuts: list[int]
) -> tuple[World, list[tuple[int, int, int]]]:
    audio, truth = speech(words)
    records, at = [], 0
    for i, cut in enumerate([*cuts, len(audio)]):
        end = min(len(audio), at + cut) if i < len(cuts) else len(audio)
        if end > at:
            records.append((len(records), AUDIO, audio[at:end]))
        at = end
    records.append((len(records), END, b""))
    return World(audio, records, Session("s", 0, POLICY, config=RAW, now=0.0)), truth


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    words,
    st.lists(st.integers(1, 4000), max_size=8),
    st.lists(st.sampled_from(OPS), min_size=30, max_size=150),
)
def test_any_interleaving_covers_every_word_exactly_once(
    words: list[tuple[int, int]], cuts: list[int], ops: list[str]
) -> None:
    w, truth = world(words, cuts)
    for op in ops:
        w.step(op)
        assert_time_goes_forward(w.published[-1])
    w.finish()
    finals = w.published[-1]
    assert_time_goes_forward(finals)
    assert_exact_cover(finals, truth)
    assert len({f.event_id for f in finals}) == len(finals)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    words,
    st.lists(st.integers(1, 4000), max_size=8),
    st.lists(st.sampled_from((*OPS, "crash")), min_size=30, max_size=150),
)
def test_crashes_lose_nothing_and_double_only_after_the_checkpoint(
    words: list[tuple[int, int]], cuts: list[int], ops: list[str]
) -> None:
    w, truth = world(words, cuts)
    for op in ops:
        w.step(op)
    w.finish()
    every = [f for run in w.published for f in run]
    unique = {f.event_id: f for f in every}
    # Nothing lost: every word's audio is in some final.
    for value, start, end in truth:
        parts = [c for c in covered_ms(list(unique.values())) if c[2] == f"w{value}"]
        assert parts, f"word {value} lost"
        assert min(p[0] for p in parts) <= start
        assert max(p[1] for p in parts) >= end
    for run in w.published:
        assert_time_goes_forward(run)


def assert_time_goes_forward(finals: list[TranscriptEvent]) -> None:
    starts = [f.start_ms or 0 for f in finals]
    assert starts == sorted(starts), starts


def assert_exact_cover(finals: list[TranscriptEvent], truth: list[tuple[int, int, int]]) -> None:
    """Every word's audio is in exactly one final (a flush may cut a word in two
    finals, which then meet exactly), and nothing else is."""
    spans = covered_ms(finals)
    for (_, end, _), (start, _, _) in itertools.pairwise(spans):
        assert end <= start, f"finals overlap: {spans}"
    for value, start, end in truth:
        parts = [s for s in spans if s[2] == f"w{value}"]
        assert parts, f"word {value} lost"
        assert parts[0][0] == start, (value, start, parts)
        assert parts[-1][1] == end, (value, end, parts)
        for (_, a_end, _), (b_start, _, _) in itertools.pairwise(parts):
            assert a_end == b_start, parts
    assert sum(len([s for s in spans if s[2] == f"w{v}"]) for v, _, _ in truth) == len(spans)
