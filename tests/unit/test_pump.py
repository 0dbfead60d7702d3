"""SessionPump: links, outputs and supervision around a session, on fakes.

No sockets: the upstream is tests.unit.fakes.FakeServer (a recognizer
stand-in that can drop, send malformed frames or go silent), the producer is
FakeProducer. Waits are on conditions (the owner's events, the pump's own
``wait_for``), never fixed sleeps.
"""

from __future__ import annotations

import struct
import time

from schemas.envelope import RecordHeaders, SessionConfig
from schemas.events import parse_event
from tests.unit.fakes import FakeProducer, FakeServer, Owner
from workers.errors import UpstreamRefused
from workers.link import RetryPolicy
from workers.publisher import OutputTopics, Publisher
from workers.pump import SessionPump
from workers.session import Session, SessionPolicy
from workers.telemetry import Telemetry

RAW = SessionConfig(encoding="pcm_s16le", sample_rate=8000)
TOPICS = OutputTopics("t", "u", "s", "dlq")
FAST = RetryPolicy(initial_s=0.001, max_s=0.005, attempts=5, allowance=50, stall_timeout_s=0.2)
POLICY = SessionPolicy(end_timeout_s=2.0, retry=FAST)
AUDIO, END = RecordHeaders(), RecordHeaders(kind="end")


def words(*values: int) -> bytes:
    """100 ms of each value, 100 ms of silence between (8 kHz)."""
    silence = b"\x00\x00" * 800
    return silence + b"".join(struct.pack("<h", v) * 800 + silence for v in values)


def make(
    server: FakeServer, policy: SessionPolicy = POLICY
) -> tuple[SessionPump, Owner, FakeProducer]:
    producer, owner = FakeProducer(), Owner()
    publisher = Publisher(producer, Telemetry(), TOPICS)
    session = Session("call", 0, policy, config=RAW, now=time.monotonic())
    return SessionPump(session, connector=server, publisher=publisher, owner=owner), owner, producer


def emitted(producer: FakeProducer, kind: str | None = None) -> list[object]:
    events = [parse_event(r.value or b"") for r in producer.records]
    return [e for e in events if kind is None or e.type == kind]


def texts(producer: FakeProducer) -> list[str]:
    return [getattr(e, "text", "") for e in emitted(producer, "transcript")]


async def finish(pump: SessionPump, owner: Owner, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not owner.finished.is_set():
        assert time.monotonic() < deadline, "the session did not finish"
        pump.tick(quiet_s=0.0)
        await pump.wait_for(owner.finished.is_set, 0.05)


async def test_records_become_finals_then_the_session_ends() -> None:
    pump, owner, producer = make(FakeServer())
    pump.feed(0, AUDIO, words(1001, 1002), None, None)
    pump.feed(1, END, b"", None, None)
    await finish(pump, owner)
    assert texts(producer) == ["w1001", "w1002"]
    kinds = [getattr(e, "type", "") for e in emitted(producer)]
    assert kinds[0] == "session_started"
    assert kinds[-1] == "session_ended"
    assert owner.progress > 0
    assert owner.latencies
    for record in producer.records:
        assert record.headers["ce_id"]
        assert record.headers["traceparent"]
    await pump.stop()


async def test_a_server_that_drops_every_connection_at_once_fails_the_session() -> None:
    server = FakeServer(modes=["drop"])
    pump, owner, producer = make(server)
    pump.feed(0, AUDIO, words(1001), None, None)
    await finish(pump, owner)
    [failed] = emitted(producer, "session_failed")
    assert getattr(failed, "code", "") == "upstream_unstable"
    assert server.attempts == FAST.attempts + 1  # backoff, then give up: no storm
    await pump.stop()


async def test_a_malformed_frame_reconnects_and_replays() -> None:
    server = FakeServer(modes=["malformed", "normal"])
    pump, owner, producer = make(server)
    pump.feed(0, AUDIO, words(1001, 1002), None, None)
    pump.feed(1, END, b"", None, None)
    await finish(pump, owner)
    assert texts(producer) == ["w1001", "w1002"]
    [reconnected] = emitted(producer, "upstream_reconnected")
    assert getattr(reconnected, "reason", "") == "protocol_error"
    await pump.stop()


async def test_a_silent_upstream_owing_a_flush_is_replaced() -> None:
    server = FakeServer(modes=["silent", "normal"])
    pump, owner, producer = make(server)
    pump.feed(0, AUDIO, words(1001), None, None)
    pump.feed(1, END, b"", None, None)  # the end flushes: an answer is owed
    await finish(pump, owner)
    assert texts(producer) == ["w1001"]
    [reconnected] = emitted(producer, "upstream_reconnected")
    assert getattr(reconnected, "reason", "") == "stall"
    await pump.stop()


async def test_a_refusal_fails_the_session_with_its_code() -> None:
    pump, owner, producer = make(FakeServer(refuse=UpstreamRefused(402, code="PAYMENT_REQUIRED")))
    pump.feed(0, AUDIO, words(1001), None, None)
    await finish(pump, owner)
    [failed] = emitted(producer, "session_failed")
    assert getattr(failed, "code", "") == "PAYMENT_REQUIRED"
    await pump.stop()


async def test_a_task_that_fails_unexpectedly_fails_its_session_not_the_worker() -> None:
    async def broken(params: object, session_id: str) -> object:
        raise RuntimeError("a bug in the connector")

    producer, owner = FakeProducer(), Owner()
    session = Session("call", 0, POLICY, config=RAW, now=time.monotonic())
    pump = SessionPump(
        session,
        connector=broken,  # type: ignore[arg-type]
        publisher=Publisher(producer, Telemetry(), TOPICS),
        owner=owner,
    )
    pump.feed(0, AUDIO, words(1001), None, None)
    await finish(pump, owner)
    [failed] = emitted(producer, "session_failed")
    assert getattr(failed, "code", "") == "internal_error"
    await pump.stop()


async def test_output_the_broker_refuses_fails_the_session() -> None:
    class MessageSizeTooLargeError(Exception):
        pass

    pump, owner, producer = make(FakeServer())
    producer.fail["t"] = MessageSizeTooLargeError()
    pump.feed(0, AUDIO, words(1001), None, None)
    pump.feed(1, END, b"", None, None)
    await finish(pump, owner)
    [failed] = emitted(producer, "session_failed")
    assert getattr(failed, "code", "") == "output_rejected"
    await pump.stop()


async def test_a_large_container_record_is_decoded_in_steps_without_blocking() -> None:
    from emulator.samples import encode

    pcm = struct.pack("<h", 0) * 16000 * 20 + struct.pack("<h", 3000) * 1600
    producer, owner = FakeProducer(), Owner()
    session = Session("call", 0, POLICY, config=SessionConfig(), now=time.monotonic())
    server = FakeServer(frames_per_ms=16)
    pump = SessionPump(
        session, connector=server, publisher=Publisher(producer, Telemetry(), TOPICS), owner=owner
    )
    started = time.monotonic()
    pump.feed(0, AUDIO, encode(pcm, 16000, 1, "wav"), None, None)  # 20 s in one record
    assert time.monotonic() - started < 0.5  # the record is queued, not decoded in place
    pump.feed(1, END, b"", None, None)
    await finish(pump, owner)
    assert texts(producer) == ["w3000"]
    await pump.stop()


async def test_a_session_holding_its_bound_decodes_on_as_finals_cover_audio() -> None:
    from emulator.samples import encode

    policy = SessionPolicy(end_timeout_s=2.0, retry=FAST, max_held_s=1.0)
    tone = b"".join(struct.pack("<h", 1000 + i) * 8000 + b"\x00\x00" * 8000 for i in range(8))
    producer, owner = FakeProducer(), Owner()
    session = Session("call", 0, policy, config=SessionConfig(), now=time.monotonic())
    pump = SessionPump(
        session,
        connector=FakeServer(frames_per_ms=16),
        publisher=Publisher(producer, Telemetry(), TOPICS),
        owner=owner,
    )
    pump.feed(0, AUDIO, encode(tone, 16000, 1, "wav"), None, None)  # 8 s in one record
    pump.feed(1, END, b"", None, None)
    await finish(pump, owner)
    assert texts(producer) == [f"w{1000 + i}" for i in range(8)]
    assert max(s.stats.max_uncovered for s in session.streams) <= 3 * 16000  # never all 8 s
    await pump.stop()


async def test_every_upstream_connection_has_a_span_under_the_session() -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    telemetry, finished = Telemetry(), InMemorySpanExporter()
    telemetry._tracer_provider.add_span_processor(SimpleSpanProcessor(finished))
    producer, owner = FakeProducer(), Owner()
    session = Session("call", 0, POLICY, config=RAW, now=time.monotonic())
    session_span = telemetry.session_span("call", {})
    pump = SessionPump(
        session,
        connector=FakeServer(modes=["malformed", "normal"]),
        publisher=Publisher(producer, telemetry, TOPICS),
        owner=owner,
        span=session_span,
        telemetry=telemetry,
    )
    pump.feed(0, AUDIO, words(1001), None, None)
    pump.feed(1, END, b"", None, None)
    await finish(pump, owner)
    await pump.stop()
    connections = [s for s in finished.get_finished_spans() if s.name == "stt.upstream"]
    assert [s.attributes["stt.connection"] for s in connections] == [1, 2]
    assert [s.status.status_code for s in connections] == [StatusCode.ERROR, StatusCode.UNSET]
    assert connections[0].status.description == "UpstreamProtocolError"
    trace_id = session_span.get_span_context().trace_id
    assert all(s.context.trace_id == trace_id for s in connections)
    assert all(s.parent.span_id == session_span.get_span_context().span_id for s in connections)
