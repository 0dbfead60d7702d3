"""Publisher: every output record leaves through it, with its headers.

Driven with a fake Kafka producer that keeps what it was sent and can refuse:
records larger than its ``max_request_size`` (measured with aiokafka's own
estimate, as ``AIOKafkaProducer.send`` does), or scripted errors at send or at
acknowledgement. Covers the CloudEvents headers and ``traceparent`` of events
(also without a parent span), routing by event type, dead letters (kept and
added headers, cut to fit, the last-resort cut, issue 12's oversized dead
letter that crashed the agent), retries and the errors that are not retried.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from schemas.events import SessionEvent, TranscriptEvent, TurnEvent, event_id
from workers.errors import PublishError
from workers.link import RetryPolicy
from workers.publisher import OutputTopics, Publisher, Record
from workers.telemetry import Telemetry

TOPICS = OutputTopics(
    transcripts="stt.transcripts",
    turns="stt.turns",
    sessions="stt.sessions",
    dead_letters="stt.audio.dlq",
)
NO_WAIT = RetryPolicy(initial_s=0.0, max_s=0.0)  # retries without real waiting
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
FOREIGN_TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CE_KEYS = ("ce_specversion", "ce_type", "ce_source", "ce_id", "ce_time")


# -- errors as the producer raises them (the publisher maps them by class name) --------


class MessageSizeTooLargeError(Exception):
    """aiokafka's name for a record above ``max_request_size``."""


class KafkaTimeoutError(Exception):
    """A transient producer error (any name the publisher does not know)."""


class TopicAuthorizationFailedError(Exception):
    """A permanent producer error."""


class ProducerSendError(Exception):
    """Faust wraps aiokafka's errors in this (``raise ... from exc``)."""


# -- the fake producer -------------------------------------------------------------------


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    partition: int | None

    def header(self, name: str) -> bytes:
        values = [v for k, v in self.headers if k == name]
        assert len(values) == 1, (name, self.headers)
        return values[0]

    def names(self) -> list[str]:
        return [k for k, _ in self.headers]

    @property
    def wire_size(self) -> int:
        # what AIOKafkaProducer.send checks against max_request_size
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(self.key, self.value, self.headers)
        return int(size)


@dataclass
class FakeProducer:
    """Keeps acknowledged records in ``sent``. ``max_request_size`` refuses
    larger records like aiokafka; ``fail_send`` / ``fail_ack`` are raised, in
    order, by the next sends / acknowledgements."""

    max_request_size: int | None = None
    fail_send: list[BaseException] = field(default_factory=list)
    fail_ack: list[BaseException] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    attempts: int = 0

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        partition: int | None = None,
    ) -> Awaitable[Any]:
        self.attempts += 1
        record = Sent(topic, key, value, list(headers), partition)
        if self.max_request_size is not None and record.wire_size > self.max_request_size:
            raise MessageSizeTooLargeError(f"{record.wire_size} bytes")
        if self.fail_send:
            raise self.fail_send.pop(0)
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail_ack:
            ack.set_exception(self.fail_ack.pop(0))
        else:
            self.sent.append(record)
            ack.set_result(None)
        return ack


def publisher(producer: FakeProducer, telemetry: Telemetry | None = None, **kw: Any) -> Publisher:
    return Publisher(producer, telemetry or Telemetry(), TOPICS, retry=NO_WAIT, **kw)


def record(
    value: bytes | None = b"audio",
    headers: list[tuple[str, bytes]] | None = None,
    key: bytes | None = b"call-1",
) -> Record:
    return Record(
        topic="stt.audio",
        partition=3,
        offset=42,
        key=key,
        value=value,
        headers=headers if headers is not None else [],
    )


def final(text: str = "hello", duration_ms: int = 1500) -> TranscriptEvent:
    return TranscriptEvent(
        event_id=event_id("call-1", None, 0, "final"),
        session_id="call-1",
        is_final=True,
        text=text,
        start_ms=0,
        duration_ms=duration_ms,
    )


def scraped(telemetry: Telemetry) -> str:
    return telemetry.scrape().decode()


# -- events ----------------------------------------------------------------------------


EVENTS = [
    pytest.param(final(), "stt.transcripts", id="transcript"),
    pytest.param(
        TurnEvent(event_id="t1", session_id="call-1", type="turn_start", turn_index=0),
        "stt.turns",
        id="turn",
    ),
    pytest.param(
        SessionEvent(event_id="s1", session_id="call-1", type="session_started"),
        "stt.sessions",
        id="session",
    ),
]


@pytest.mark.parametrize(("event", "topic"), EVENTS)
async def test_each_event_goes_to_its_topic_keyed_by_session(event: Any, topic: str) -> None:
    producer = FakeProducer()
    await publisher(producer).event(event, None)
    [sent] = producer.sent
    assert sent.topic == topic
    assert sent.key == b"call-1"
    assert sent.value is not None
    assert json.loads(sent.value)["event_id"] == event.event_id


@pytest.mark.parametrize(("event", "topic"), EVENTS)
async def test_every_event_carries_cloudevents_headers(event: Any, topic: str) -> None:
    producer = FakeProducer()
    await publisher(producer, source="urn:test:worker").event(event, None)
    [sent] = producer.sent
    assert sent.header("ce_specversion") == b"1.0"
    assert sent.header("ce_type") == f"dev.reson8.kafka.{event.type}".encode()
    assert sent.header("ce_source") == b"urn:test:worker"
    assert sent.header("ce_id") == event.event_id.encode()
    assert datetime.fromisoformat(sent.header("ce_time").decode()) == event.time


async def test_an_event_without_a_parent_span_gets_a_root_traceparent() -> None:
    producer = FakeProducer()
    await publisher(producer).event(final(), None)
    assert TRACEPARENT.match(producer.sent[0].header("traceparent").decode())


async def test_an_event_is_traced_under_its_parent_span() -> None:
    producer, telemetry = FakeProducer(), Telemetry()
    parent = telemetry.child_span("stt.session", None, {})
    await publisher(producer, telemetry).event(final(), parent)
    parent.end()
    match = TRACEPARENT.match(producer.sent[0].header("traceparent").decode())
    assert match is not None
    assert int(match[1], 16) == parent.get_span_context().trace_id
    assert int(match[2], 16) != parent.get_span_context().span_id  # the emit span's own


async def test_a_published_final_adds_its_duration_to_transcribed_audio() -> None:
    producer, telemetry = FakeProducer(), Telemetry()
    await publisher(producer, telemetry).event(final(duration_ms=1500), None)
    assert re.search(r"reson8_audio_transcribed_seconds_total\{[^}]*\} 1\.5", scraped(telemetry))


async def test_a_published_reconnect_counts_a_connection_with_its_reason() -> None:
    producer, telemetry = FakeProducer(), Telemetry()
    event = SessionEvent(
        event_id="c2", session_id="call-1", type="upstream_reconnected", reason="http_503"
    )
    await publisher(producer, telemetry).event(event, None)
    text = scraped(telemetry)
    assert re.search(
        r'reson8_upstream_connections_total\{kind="reconnect"[^}]*reason="http_503"', text
    )


# -- dead letters --------------------------------------------------------------------------


async def test_a_dead_letter_keeps_the_record_and_says_why_and_where_from() -> None:
    producer = FakeProducer()
    original = record(
        value=b"\x00garbage",
        headers=[
            ("stt-encoding", b"pcm_s16le"),
            ("traceparent", FOREIGN_TRACEPARENT),
            ("tracestate", b"vendor=1"),
        ],
    )
    await publisher(producer).dead_letter(original, "bad_header", "stt-encoding: nope")
    [sent] = producer.sent
    assert (sent.topic, sent.key, sent.value) == ("stt.audio.dlq", b"call-1", b"\x00garbage")
    assert sent.header("stt-encoding") == b"pcm_s16le"
    assert sent.header("stt-error-code") == b"bad_header"
    assert sent.header("stt-error-detail") == b"stt-encoding: nope"
    assert sent.header("stt-source-topic") == b"stt.audio"
    assert sent.header("stt-source-partition") == b"3"
    assert sent.header("stt-source-offset") == b"42"
    assert "tracestate" not in sent.names()
    assert sent.header("traceparent") != FOREIGN_TRACEPARENT  # the worker's own span
    assert TRACEPARENT.match(sent.header("traceparent").decode())


async def test_a_dead_letter_is_a_cloudevent_with_an_id_stable_across_replays() -> None:
    producer = FakeProducer()
    pub = publisher(producer)
    await pub.dead_letter(record(), "oversized", "too big")
    await pub.dead_letter(record(), "oversized", "too big")  # the record read again
    first, again = producer.sent
    for key in CE_KEYS:
        assert key in first.names()
    assert first.header("ce_type") == b"dev.reson8.kafka.dead_letter"
    assert first.header("ce_specversion") == b"1.0"
    assert datetime.fromisoformat(first.header("ce_time").decode()).tzinfo is not None
    assert first.header("ce_id") == again.header("ce_id")


async def test_a_dead_letter_of_a_dead_letter_carries_only_the_new_error() -> None:
    producer = FakeProducer()
    earlier = [("stt-error-code", b"old"), ("stt-error-detail", b"old detail")]
    await publisher(producer).dead_letter(record(headers=earlier), "session_failed", "failed")
    assert producer.sent[0].header("stt-error-code") == b"session_failed"
    assert producer.sent[0].header("stt-error-detail") == b"failed"


async def test_a_long_detail_is_bounded() -> None:
    producer = FakeProducer()
    await publisher(producer).dead_letter(record(), "internal_error", "é" + "x" * 5000)
    detail = producer.sent[0].header("stt-error-detail")
    assert len(detail) <= 1000
    assert detail.startswith(b"?x")  # ASCII, whatever the exception text held


async def test_a_dead_letter_of_a_record_without_value_has_no_value() -> None:
    producer = FakeProducer()
    await publisher(producer).dead_letter(record(value=None), "bad_key", "no value")
    assert producer.sent[0].value is None
    assert "stt-truncated" not in producer.sent[0].names()


async def test_a_dead_letter_that_fits_is_not_cut() -> None:
    producer = FakeProducer(max_request_size=10_000)
    value = bytes(range(256)) * 30  # 7,680 bytes
    await publisher(producer, max_record_bytes=10_000).dead_letter(record(value), "x", "y")
    assert producer.sent[0].value == value
    assert "stt-truncated" not in producer.sent[0].names()


async def test_a_dead_letter_too_large_for_the_producer_is_cut_to_fit_not_raised() -> None:
    """Issue 12: a dead letter above the producer's request limit crashed the agent."""
    limit = 100_000
    producer = FakeProducer(max_request_size=limit)
    value = bytes(range(256)) * 1200  # 307,200 bytes
    await publisher(producer, max_record_bytes=limit).dead_letter(record(value), "oversized", "big")
    [sent] = producer.sent
    assert sent.wire_size <= limit
    assert sent.header("stt-truncated") == b"307200"
    assert sent.value is not None
    assert value.startswith(sent.value)
    assert len(sent.value) > 64 * 1024  # cut to fit, not to the last resort
    assert producer.attempts == 1  # cut before the producer had to refuse it


async def test_a_broker_refusing_the_cut_dead_letter_gets_the_last_resort_cut() -> None:
    # The publisher was told 1 MB, the broker takes 100 kB (its limit is lower
    # than the start-up check saw): the dead letter still goes out.
    producer = FakeProducer(max_request_size=100_000)
    value = b"v" * 300_000
    pub = publisher(producer, max_record_bytes=1_000_000)
    await pub.dead_letter(record(value), "oversized", "big")
    [sent] = producer.sent
    assert sent.header("stt-truncated") == b"300000"
    assert sent.value is not None
    assert 0 < len(sent.value) <= 64 * 1024
    assert sent.header("stt-error-code") == b"oversized"


async def test_a_dead_letter_whose_headers_exceed_the_limit_is_still_produced() -> None:
    limit = 100_000
    producer = FakeProducer(max_request_size=limit)
    hostile = record(value=b"tiny", headers=[("x-padding", b"h" * 150_000)])
    await publisher(producer, max_record_bytes=limit).dead_letter(hostile, "bad_header", "big")
    [sent] = producer.sent
    assert sent.header("stt-error-code") == b"bad_header"
    assert sent.wire_size <= limit


async def test_a_broker_taking_less_than_the_last_resort_still_gets_the_dead_letter() -> None:
    producer = FakeProducer(max_request_size=16_000)
    await publisher(producer, max_record_bytes=1_000_000).dead_letter(
        record(b"v" * 300_000), "oversized", "big"
    )
    assert producer.sent[0].header("stt-truncated") == b"300000"


async def test_limit_dead_letters_lowers_the_size_dead_letters_are_cut_to() -> None:
    producer = FakeProducer(max_request_size=50_000)
    pub = publisher(producer, max_record_bytes=1_000_000)
    pub.limit_dead_letters(50_000)
    await pub.dead_letter(record(b"v" * 200_000), "oversized", "big")
    [sent] = producer.sent
    assert sent.wire_size <= 50_000
    assert producer.attempts == 1  # the first cut fitted: no refusal, no last resort


def test_limit_dead_letters_never_raises_the_limit() -> None:
    pub = publisher(FakeProducer(), max_record_bytes=100_000)
    pub.limit_dead_letters(5_000_000)
    assert pub.max_record_bytes == 100_000


# -- delivery: retries and errors ------------------------------------------------------------


async def test_retriable_errors_are_retried_until_the_record_is_delivered() -> None:
    producer = FakeProducer(fail_send=[KafkaTimeoutError("t/o"), KafkaTimeoutError("t/o")])
    await publisher(producer).event(final(), None)
    assert producer.attempts == 3
    assert len(producer.sent) == 1


async def test_a_failed_acknowledgement_is_retried_too() -> None:
    producer = FakeProducer(fail_ack=[KafkaTimeoutError("not enough replicas")])
    await publisher(producer).dead_letter(record(), "bad_header", "x")
    assert producer.attempts == 2
    assert len(producer.sent) == 1


async def test_a_permanent_error_raises_publish_error_without_retrying() -> None:
    producer = FakeProducer(fail_send=[TopicAuthorizationFailedError("denied")])
    with pytest.raises(PublishError) as raised:
        await publisher(producer).event(final(), None)
    assert raised.value.topic == "stt.transcripts"
    assert raised.value.code == "kafka"
    assert not raised.value.retriable
    assert producer.attempts == 1


async def test_an_event_too_large_for_the_producer_raises_publish_error() -> None:
    producer = FakeProducer(max_request_size=1_000)
    with pytest.raises(PublishError) as raised:
        await publisher(producer).event(final(text="x" * 5_000), None)
    assert raised.value.code == "too_large"
    assert producer.attempts == 1


async def test_an_error_wrapped_by_faust_is_mapped_by_its_cause() -> None:
    wrapped = ProducerSendError("Error while sending")
    wrapped.__cause__ = MessageSizeTooLargeError("too big")
    producer = FakeProducer(fail_send=[wrapped])
    with pytest.raises(PublishError) as raised:
        await publisher(producer).event(final(), None)
    assert raised.value.code == "too_large"


async def test_a_checkpoint_record_goes_to_its_partition_without_event_headers() -> None:
    producer = FakeProducer()
    await publisher(producer).record("stt.checkpoints", b"call-1", b"{}", 7)
    await publisher(producer).record("stt.checkpoints", b"call-1", None, 7)
    assert [(s.topic, s.key, s.value, s.partition) for s in producer.sent] == [
        ("stt.checkpoints", b"call-1", b"{}", 7),
        ("stt.checkpoints", b"call-1", None, 7),
    ]
    assert producer.sent[0].headers == []
