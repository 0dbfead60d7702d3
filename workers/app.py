"""The Faust app: an agent on ``stt.audio`` pumping records into the registry.

Built by :func:`create_app` from :class:`~workers.settings.Settings` (no module
globals). Faust settings that the delivery contract depends on:

- ``stream.noack()``: records are acked by the registry, in partition order,
  once covered, so the committed offset never passes uncovered audio;
- ``stream_wait_empty=False``: held (unacked) records must not stall a
  rebalance or a shutdown (ARCHITECTURE.md, "Delivery");
- ``consumer_auto_offset_reset='earliest'``: a new group reads what is there;
- ``producer_max_request_size``: at least the largest dead letter (checked
  against the dead-letter topic's ``max.message.bytes`` at start-up).

``/healthz`` answers while the process runs; ``/ready`` is false while the
consumer group rebalances or checkpoints load, or before partitions are
assigned; ``/metrics`` is the Prometheus exposition (``workers.telemetry``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import faust
from faust.types import TP
from faust.web import Request, Response, View

from topology.connection import KafkaSettings
from workers import redact
from workers.checkpoint_log import CheckpointLog
from workers.publisher import Headers, OutputTopics, Publisher, Record
from workers.registry import Registry
from workers.settings import Settings
from workers.telemetry import SCRAPE_CONTENT_TYPE, Telemetry
from workers.transport import RUN_CODEC, Run, TransportOptions

log = logging.getLogger(__name__)
LOOP_PROBE_S = 0.25  # how often the event-loop lag is sampled


class _FaustProducer:
    """The publisher's producer on the app's own (Faust) producer."""

    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None = None,
    ) -> Awaitable[Any]:
        return await self._app.producer.send(topic, key, value, partition, None, headers)


class _ConsumerOffsets:
    """Committed offset and high-water mark of ``stt.audio`` partitions."""

    def __init__(self, app: faust.App, topic: str) -> None:
        self._app, self.topic = app, topic

    def committed(self, partition: int) -> int | None:
        consumer: Any = self._app.consumer
        value = consumer._committed_offset.get(TP(self.topic, partition))  # no public getter
        return None if value is None else int(value)

    def highwater(self, partition: int) -> int | None:
        """None too for a partition the consumer no longer has: between the
        consumer's new assignment and the registry's (a rebalance), the
        registry still asks about the partitions it holds."""
        consumer: Any = self._app.consumer
        try:
            value = consumer.highwater(TP(self.topic, partition))
        except AssertionError:  # aiokafka: "Partition is not assigned"
            return None
        return None if value is None else int(value)


def freeze_startup_heap() -> None:
    """Move everything alive at start-up (modules, Faust's services, pydantic
    models: ~100,000 objects) out of the cyclic collector's reach. A full
    collection otherwise scans them all, 30 ms and more on a slow core, and
    runs often under load: a pause of the event loop that every session's
    audio waits behind. Objects made later are collected as usual."""
    gc.collect()
    gc.freeze()


def _broker_urls(bootstrap: str) -> list[str]:
    # reson8://: the project's transport (workers/transport.py), found through
    # the faust.transports entry point.
    return [f"reson8://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def create_app(settings: Settings, *, datadir: Path | None = None) -> faust.App:
    """The worker's Faust app, with its agent, timers and web views registered."""
    return WorkerApp(settings, datadir=datadir).app


class WorkerApp:
    """Wires the registry into a Faust app (agent, timers, signals, web views)."""

    def __init__(self, settings: Settings, *, datadir: Path | None = None) -> None:
        redact.install([settings.api_key.get_secret_value(), *_kafka_secrets()])
        self.settings = settings
        self.app = _faust_app(settings, datadir)
        self.telemetry = Telemetry(
            settings.telemetry_exporter,
            settings.service_name,
            settings.otlp_endpoint,
            uncovered_bound_s=settings.max_uncovered_s,
        )
        self._stream: Any = None
        self.publisher = Publisher(
            _FaustProducer(self.app),
            self.telemetry,
            OutputTopics(
                transcripts=settings.topic("stt.transcripts"),
                turns=settings.topic("stt.turns"),
                sessions=settings.topic("stt.sessions"),
                dead_letters=settings.topic("stt.audio.dlq"),
            ),
            max_record_bytes=settings.producer_max_request_bytes,
        )
        self.checkpoints = CheckpointLog(
            settings.topic("stt.checkpoints"),
            self.publisher.record,
            KafkaSettings.from_env().with_bootstrap(settings.bootstrap_servers),
        )
        source = settings.topic("stt.audio")
        self.offsets = _ConsumerOffsets(self.app, source)
        self.telemetry.lag_source = self._lag
        self.registry = Registry(
            settings,
            self.publisher,
            self._ack,
            self.telemetry,
            checkpoints=self.checkpoints,
            offsets=self.offsets,
        )
        self.app.transport_options = TransportOptions(
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            fetch_min_bytes=settings.fetch_min_bytes,
            linger_ms=settings.consumer_linger_ms,
            run_topics=frozenset({source}),
            assignor=settings.partition_assignor,
        )
        # Each event is a run of consecutive records of one partition
        # (workers/transport.py); the agent hands it to the registry whole.
        self.audio = self.app.topic(source, key_serializer="raw", value_serializer=RUN_CODEC)
        self.max_loop_lag_s = 0.0
        self._rebalance_started: float | None = None
        self._heap_frozen = False
        self.app.agent(self.audio, name="transcribe")(self._transcribe)
        self.app.timer(0.5)(self._tick)
        self.app.task(self.registry.checkpointer.run)
        self.app.task(self._watch_loop)
        self.app.task(self._check_dead_letter_limit)
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        self.app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        self.app.on_before_shutdown.connect(self._on_shutdown)  # type: ignore[arg-type]
        self.app.drain = self._drain
        self._register_views()

    async def _ack(self, event: Any) -> None:
        await self._stream.ack(event)

    async def _transcribe(self, stream: Any) -> None:
        self._stream = manual = stream.noack()
        async for event in manual.events():
            message = event.message
            run: Run = event.value
            records = [
                Record(
                    topic=message.topic,
                    partition=message.partition,
                    offset=r.offset,
                    key=r.key,
                    value=r.value,
                    headers=r.headers,
                    timestamp_ms=r.timestamp,
                )
                for r in run.records
            ]
            run.release()  # acked later; the bytes now live in the sessions (or nowhere)
            await self.registry.handle_run(records, event)

    def _lag(self) -> dict[str, int]:
        """Records behind the committed offset, per assigned partition whose
        end the consumer knows (``reson8_consumer_lag``, read at each scrape)."""
        consumer: Any = self.app.consumer
        lag = {}
        for partition in self._partitions(consumer.assignment()):
            high = self.offsets.highwater(partition)
            if high is not None:
                behind = max(0, high - (self.offsets.committed(partition) or 0))
                lag[f"{self.offsets.topic}:{partition}"] = behind
        return lag

    async def _tick(self) -> None:
        """The registry's periodic work. A Faust timer that raises stops the
        whole worker; a failed tick is logged and the next one runs."""
        try:
            await self.registry.tick()
        except Exception:
            log.exception("periodic work failed; retried at the next tick")

    async def _watch_loop(self) -> None:
        """Event-loop lag: how late a timer fires (anything blocking the loop shows)."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(LOOP_PROBE_S)
            lag = max(0.0, loop.time() - started - LOOP_PROBE_S)
            self.telemetry.loop_lag.record(lag)
            if lag > self.max_loop_lag_s:
                self.max_loop_lag_s = lag
                if lag > 0.1:
                    log.warning("event loop was blocked for %.0f ms", lag * 1000)
            self.telemetry.set_ready(self.ready)

    async def _check_dead_letter_limit(self) -> None:
        """Align the dead letters' size with what their topic takes (start-up check)."""
        from topology.admin import admin_client, observe

        topic = self.settings.topic("stt.audio.dlq")
        kafka = KafkaSettings.from_env().with_bootstrap(self.settings.bootstrap_servers)
        try:
            async with admin_client(kafka, timeout_s=15.0) as admin:
                seen = await observe(admin, [topic])
        except Exception as exc:  # the worker runs on; the publisher still cuts to fit
            log.warning("cannot check %s's max.message.bytes: %s", topic, exc)
            return
        limit = seen[topic].configs.get("max.message.bytes") if topic in seen else None
        if limit is not None:
            self.publisher.limit_dead_letters(int(limit))
            if int(limit) < self.settings.max_record_bytes + 65536:
                log.warning(
                    "%s takes %s bytes per record: dead letters of large records are cut",
                    topic,
                    limit,
                )

    def _partitions(self, tps: set[Any]) -> set[int]:
        source = self.audio.get_topic_name()
        return {tp.partition for tp in tps if tp.topic == source}

    async def _on_revoked(self, sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        """A rebalance began: the registry checkpoints and holds the sessions."""
        self._rebalance_started = time.monotonic()
        await self.registry.revoke(self._partitions(revoked), self.settings.revoke_timeout_s)

    async def _on_assigned(self, sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        """Keep what came back, close what moved away, load the checkpoints of
        the partitions that are new here; their records wait for it."""
        partitions = self._partitions(assigned)
        kept, moved = await self.registry.reassigned(partitions)
        self.checkpoints.forget(moved)
        new = partitions - kept
        self.registry.assigning(new)
        started = time.monotonic()
        found = await self.checkpoints.load(new)
        if not self._heap_frozen:
            self._heap_frozen = True
            freeze_startup_heap()
        self.registry.assign(new)
        log.info(
            "partitions %s: %d kept, %d checkpoints loaded in %.2f s",
            sorted(partitions),
            len(kept),
            found,
            time.monotonic() - started,
        )
        began = self._rebalance_started or started
        self.telemetry.rebalanced(time.monotonic() - began)
        self._rebalance_started = None

    async def _drain(self) -> None:
        await self.registry.drain(self.settings.drain_timeout_s)

    async def _on_shutdown(self, sender: Any, **kwargs: Any) -> None:
        await self.registry.shutdown()
        await self.checkpoints.close()
        self.telemetry.shutdown()

    @property
    def ready(self) -> bool:
        return _is_ready(self.app) and not self.registry.loading

    def _register_views(self) -> None:
        worker, app = self, self.app

        @app.page("/healthz")
        class Health(View):
            async def get(self, request: Request) -> Response:
                return self.json(
                    {
                        "status": "ok",
                        "sessions": worker.registry.active,
                        "max_loop_lag_s": round(worker.max_loop_lag_s, 4),
                    }
                )

        @app.page("/ready")
        class Ready(View):
            async def get(self, request: Request) -> Response:
                ready = worker.ready
                worker.telemetry.set_ready(ready)
                return self.json({"ready": ready}, status=200 if ready else 503)

        @app.page("/metrics")
        class Metrics(View):
            async def get(self, request: Request) -> Response:
                return self.bytes(
                    worker.telemetry.scrape(), content_type=SCRAPE_CONTENT_TYPE.split(";")[0]
                )


class _DrainingApp(faust.App):
    """A Faust app that drains the sessions before its consumer stops, and
    tells its transport how to fetch and deliver (``transport_options``).

    ``App.on_stop`` stops the consumer (committing acked offsets) and only then
    sends ``on_before_shutdown``; mode runs ``on_stop`` before stopping the
    children (producer, agents). So the drain goes first in ``on_stop``: the
    producer can still emit the finals and the consumer commits what they cover.
    """

    drain: Any = None
    transport_options: TransportOptions = TransportOptions()

    async def on_stop(self) -> None:
        if self.drain is not None:
            await self.drain()
        await super().on_stop()


def _faust_app(settings: Settings, datadir: Path | None) -> _DrainingApp:
    folder = datadir or Path(settings.datadir) / settings.app_id
    folder.mkdir(parents=True, exist_ok=True)
    return _DrainingApp(
        settings.app_id,
        broker=_broker_urls(settings.bootstrap_servers),
        broker_credentials=_credentials(),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        topic_partitions=settings.partitions,
        topic_disable_leader=True,
        stream_wait_empty=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        producer_acks=-1,
        producer_max_request_size=settings.producer_max_request_bytes,
        producer_linger_ms=settings.producer_linger_ms,
        web_enabled=True,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_host=settings.web_host,
        consumer_group_instance_id=settings.group_instance_id,
        datadir=str(folder),
        autodiscover=False,
        web_in_thread=False,
    )


def _is_ready(app: faust.App) -> bool:
    if app.rebalancing:
        return False
    try:
        app.consumer.assignment()
    except Exception:  # consumer not started yet
        return False
    tables: Any = app.tables
    return bool(tables.recovery.completed.is_set())


def _kafka_secrets() -> list[str]:
    kafka = KafkaSettings.from_env()
    return [kafka.sasl_password] if kafka.sasl_password else []


def _credentials() -> Any:
    """Kafka TLS/SASL credentials from the ``KAFKA_*`` environment variables
    (the same ones ``topics apply`` reads, see topology.connection)."""
    from topology.connection import KafkaSettings, ssl_context

    kafka = KafkaSettings.from_env()
    context = ssl_context(kafka)
    if kafka.uses_sasl:
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password,
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
