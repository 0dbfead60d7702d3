"""The one way out: every output record of the worker goes through :class:`Publisher`.

Events (transcripts, turns, session lifecycle, including the ``session_ended``
of an orphaned session) and dead letters are produced here, so none lacks its
headers: every record carries CloudEvents Kafka binary-mode headers
(``ce_specversion``, ``ce_type``, ``ce_source``, ``ce_id``, ``ce_time``) and
the ``traceparent`` of a worker span (ARCHITECTURE.md, "Output topics").

Delivery: each call returns once the broker acknowledged the record.
Retriable Kafka errors are retried with backoff by this one loop; a record the
broker can never take raises :class:`~workers.errors.PublishError`, except a
dead letter, which is truncated until it fits (a ``stt-truncated`` header
gives the original size): a dead letter is never dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from opentelemetry.trace import Span

from schemas.events import (
    SessionEvent,
    TranscriptEvent,
    TurnEvent,
    cloudevent_headers,
    event_id,
)
from workers.errors import PublishError
from workers.link import RetryPolicy
from workers.telemetry import Telemetry

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
Event = TranscriptEvent | TurnEvent | SessionEvent
DEAD_LETTER_TYPE = "dev.reson8.kafka.dead_letter"
# Room for a record batch's and a record's own framing beside key, value and
# headers (Kafka's record batch header is 61 bytes; varints add a few).
_FRAMING = 512
_LAST_RESORT_VALUE = 64 * 1024  # a dead letter the broker still refuses is cut to this


class Producer(Protocol):
    """What the publisher needs of a Kafka producer."""

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None = None,
    ) -> Awaitable[Any]:
        """Enqueue a record; the returned awaitable resolves once it is acknowledged."""


@dataclass(frozen=True)
class Record:
    """One input record as the worker needs it (transport-neutral); dead
    letters are made of these."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    timestamp_ms: int | None = None
    handle: object = None  # the transport's event, handed back to ``ack``


@dataclass(frozen=True)
class OutputTopics:
    transcripts: str
    turns: str
    sessions: str
    dead_letters: str

    def of(self, event: Event) -> str:
        if isinstance(event, TranscriptEvent):
            return self.transcripts
        if isinstance(event, TurnEvent):
            return self.turns
        return self.sessions


class Publisher:
    """Produces every output record with its headers; see the module docstring.

    ``max_record_bytes`` is the most a record may take on the wire (the
    producer's request limit, or the dead-letter topic's ``max.message.bytes``
    if that is smaller: see :meth:`limit_dead_letters`).
    """

    def __init__(
        self,
        producer: Producer,
        telemetry: Telemetry,
        topics: OutputTopics,
        *,
        source: str = "urn:reson8-kafka:worker",
        max_record_bytes: int = 1_000_000,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._producer = producer
        self._telemetry = telemetry
        self.topics = topics
        self._source = source
        self.max_record_bytes = max_record_bytes
        self._retry = retry or RetryPolicy(initial_s=0.1, max_s=5.0, attempts=1 << 30)

    def limit_dead_letters(self, topic_max_bytes: int) -> None:
        """The dead-letter topic takes at most ``topic_max_bytes`` per record."""
        self.max_record_bytes = min(self.max_record_bytes, topic_max_bytes)

    # ------------------------------------------------------------------ events

    async def event(self, event: Event, parent: Span | None) -> None:
        """Produce ``event`` to its topic, under a span child of ``parent``;
        return once the broker acknowledged it."""
        await (await self.submit(event, parent))

    async def submit(self, event: Event, parent: Span | None) -> Awaitable[None]:
        """Enqueue ``event`` (records of one caller keep their order) and return
        what to await for its acknowledgement: submit a batch, then await them,
        so the producer sends them in one request (``producer_linger_ms``)."""
        headers = cloudevent_headers(event, self._source)
        headers += self._trace(f"emit {event.type}", parent, {"stt.event_id": event.event_id})
        value = event.to_json_bytes()
        delivery = await self._enqueue(
            self.topics.of(event), event.session_id.encode(), value, headers
        )
        self._count(event)
        return delivery

    def _count(self, event: Event) -> None:
        if isinstance(event, TranscriptEvent):
            if event.is_final and event.duration_ms:
                self._telemetry.audio_transcribed.add(event.duration_ms / 1000)
        elif event.type in ("upstream_connected", "upstream_reconnected"):
            self._telemetry.connected(getattr(event, "reason", None))

    # ------------------------------------------------------------------ dead letters

    async def dead_letter(
        self,
        record: Record,
        code: str,
        detail: str,
        parent: Span | None = None,
    ) -> None:
        """Produce ``record`` to the dead-letter topic with ``stt-error-*`` and
        source headers, cut to fit if needed; never raises for its size."""
        headers = _dead_letter_headers(record, code, detail)
        headers += self._ce_headers(record)
        headers += self._trace("dead_letter", parent, {"stt.error_code": code})
        for value, kept in self._fits(record, headers):
            try:
                await self._deliver(self.topics.dead_letters, record.key, value, kept)
                return
            except PublishError as exc:
                if exc.code != "too_large":
                    raise
        raise PublishError(self.topics.dead_letters, "too_large", "even bare", retriable=False)

    def _fits(self, record: Record, headers: Headers) -> Iterator[tuple[bytes | None, Headers]]:
        """Ever smaller forms of a dead letter, each saying what it lost: the
        record cut to the room we were told of, then (the broker's limit is
        lower) 64 KiB of it, then none of its value, then none of its own
        headers either (only ours)."""
        value = record.value
        size = len(value) if value is not None else 0
        room = self.max_record_bytes - _FRAMING - _size(record.key, None, headers)
        if value is not None and size > room:
            yield value[: max(0, room - 32)], [*headers, ("stt-truncated", str(size).encode())]
        else:
            yield value, headers
        cut = [*headers, ("stt-truncated", str(size).encode())]
        if value is not None and size > _LAST_RESORT_VALUE:
            yield value[:_LAST_RESORT_VALUE], cut
        yield None, cut
        ours = [(k, v) for k, v in cut if k.startswith(("stt-", "ce_", "traceparent"))]
        own = [(k, v) for k, v in record.headers if not k.startswith(("stt-", "ce_"))]
        yield None, [*ours, ("stt-truncated-headers", str(len(own)).encode())]

    def _ce_headers(self, record: Record) -> Headers:
        identity = event_id(record.topic, record.partition, record.offset, "dead_letter")
        return [
            ("ce_specversion", b"1.0"),
            ("ce_type", DEAD_LETTER_TYPE.encode()),
            ("ce_source", self._source.encode()),
            ("ce_id", identity.encode()),
            ("ce_time", datetime.now(UTC).isoformat().encode()),
        ]

    # ------------------------------------------------------------------ plain records

    async def record(self, topic: str, key: bytes, value: bytes | None, partition: int) -> None:
        """Produce a record that is state, not an event (a checkpoint or its
        tombstone), to an explicit partition."""
        await self._deliver(topic, key, value, [], partition)

    # ------------------------------------------------------------------ delivery

    def _trace(self, name: str, parent: Span | None, attributes: Mapping[str, str]) -> Headers:
        span = self._telemetry.child_span(name, parent, attributes)
        try:
            return self._telemetry.headers_of(span)
        finally:
            span.end()

    async def _deliver(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None = None,
    ) -> None:
        await (await self._enqueue(topic, key, value, headers, partition))

    async def _enqueue(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None = None,
    ) -> Awaitable[None]:
        """Hand the record to the producer; the result resolves once it is
        acknowledged, retrying retriable errors (this one loop backs off)."""
        try:
            pending = await self._producer.send(topic, key, value, headers, partition)
        except Exception as exc:  # the producer's errors, mapped here once
            pending = _failed(exc)
        return self._acknowledged(pending, (topic, key, value, headers, partition))

    async def _acknowledged(self, pending: Awaitable[Any], record: tuple[Any, ...]) -> None:
        topic = record[0]
        attempt = 0
        while True:
            try:
                await pending
                return
            except Exception as exc:
                error = _publish_error(topic, exc)
                attempt += 1
                if not error.retriable or self._retry.exhausted(attempt):
                    raise error from exc
                delay = self._retry.delay(attempt)
                log.warning("producing to %s failed (%s); retry in %.1f s", topic, error, delay)
                await asyncio.sleep(delay)
            try:
                pending = await self._producer.send(*record)
            except Exception as exc:
                pending = _failed(exc)


async def _failed(exc: Exception) -> None:
    raise exc


def _dead_letter_headers(record: Record, code: str, detail: str) -> Headers:
    kept = [
        (k, v)
        for k, v in record.headers
        if k not in ("traceparent", "tracestate") and not k.startswith(("stt-error-", "ce_"))
    ]
    return [
        *kept,
        ("stt-error-code", code.encode()),
        ("stt-error-detail", detail.encode("ascii", "replace")[:1000]),
        ("stt-source-topic", record.topic.encode()),
        ("stt-source-partition", str(record.partition).encode()),
        ("stt-source-offset", str(record.offset).encode()),
        *(
            [("stt-source-timestamp", str(record.timestamp_ms).encode())]
            if record.timestamp_ms
            else []
        ),
    ]


def _size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    return (
        len(key or b"")
        + len(value or b"")
        + sum(len(k.encode()) + len(v) + 8 for k, v in headers)
        + 32
    )


_TOO_LARGE = ("MessageSizeTooLargeError", "RecordTooLargeError", "RecordBatchTooLargeError")
_FINAL = (
    "TopicAuthorizationFailedError",
    "InvalidTopicError",
    "UnknownTopicOrPartitionError",
    "ProducerClosed",
    "UnsupportedForMessageFormatError",
)


def _publish_error(topic: str, exc: BaseException) -> PublishError:
    """Map a producer error (aiokafka's, possibly wrapped by Faust) onto ours."""
    cause = exc
    while cause.__cause__ is not None and type(cause).__name__ == "ProducerSendError":
        cause = cause.__cause__
    name = type(cause).__name__
    if name in _TOO_LARGE:
        return PublishError(topic, "too_large", name, retriable=False)
    if name in _FINAL:
        return PublishError(topic, "kafka", name, retriable=False)
    return PublishError(topic, "kafka", f"{name}: {cause}"[:200], retriable=True)
