"""OpenTelemetry tracing and metrics of the worker, with a Prometheus endpoint.

Traces: the producer's ``traceparent`` header is the parent of the session
span (``stt.session``); each upstream connection gets a span under it
(``stt.upstream``, from open to close), and every emitted record a short
span (``emit <type>``, ``dead_letter``) whose ``traceparent`` the record
carries (W3C trace context).

Metrics are OpenTelemetry instruments, read by two readers at once: the
exporter chosen in the settings (``otlp`` pushes, ``console`` prints) and a
Prometheus reader behind the worker's ``/metrics`` (:meth:`Telemetry.scrape`).
The Prometheus names (docs/operations.md explains each):

========================================  =========  ============================
name                                      type       labels
========================================  =========  ============================
reson8_sessions_active                    gauge      endpoint
reson8_audio_received_seconds_total       counter
reson8_audio_transcribed_seconds_total    counter
reson8_records_total                      counter    outcome
reson8_dead_letters_total                 counter    code
reson8_upstream_connections_total         counter    kind, reason
reson8_upstream_latency_seconds           histogram
reson8_uncovered_audio_seconds            gauge
reson8_uncovered_audio_bound_seconds      gauge
reson8_uncovered_audio_held_seconds       histogram
reson8_consumer_lag                       gauge      partition
reson8_checkpoint_writes_total            counter
reson8_checkpoint_write_seconds           histogram
reson8_rebalances_total                   counter
reson8_rebalance_duration_seconds         histogram
reson8_sessions_resumed_total             counter
reson8_sessions_failed_total              counter    code
reson8_event_loop_lag_seconds             histogram
reson8_input_delay_seconds                histogram
reson8_worker_ready                       gauge
========================================  =========  ============================

``reson8_input_delay_seconds`` is how late the worker handles its input: the
newest record of each run, from its timestamp to the moment it is routed.
Counters on the per-record path are plain integers read by observable
instruments at collection time, so the hot path pays no SDK call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Exporter = Literal["none", "console", "otlp"]
SCRAPE_CONTENT_TYPE = CONTENT_TYPE_LATEST

# Histogram buckets (seconds) per instrument.
_BUCKETS = {
    "reson8.upstream.latency": (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20),
    "reson8.uncovered_audio.held": (0.5, 1, 2, 3, 5, 10, 20, 30, 60),
    "reson8.checkpoint.write": (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
    "reson8.rebalance.duration": (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    "reson8.event_loop.lag": (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
    "reson8.input.delay": (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
}


class SessionView(Protocol):
    """What telemetry reads of a session."""

    @property
    def config(self) -> Any: ...

    @property
    def state(self) -> str: ...

    @property
    def uncovered_seconds(self) -> float: ...

    @property
    def max_held_seconds(self) -> float: ...

    @property
    def failure(self) -> Any: ...


class Telemetry:
    """Tracer and meters of one worker process. Call :meth:`shutdown` at exit."""

    def __init__(
        self,
        exporter: Exporter = "none",
        service_name: str = "reson8-kafka-worker",
        otlp_endpoint: str | None = None,
        *,
        uncovered_bound_s: float = 30.0,
    ) -> None:
        resource = Resource.create({"service.name": service_name})
        self._tracer_provider = TracerProvider(resource=resource)
        span_exporter, readers = _exporters(exporter, otlp_endpoint)
        if span_exporter is not None:
            self._tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        self.registry = CollectorRegistry()
        readers.append(PrometheusMetricReader(disable_target_info=True, registry=self.registry))
        views = [
            View(instrument_name=name, aggregation=ExplicitBucketHistogramAggregation(bounds))
            for name, bounds in _BUCKETS.items()
        ]
        self._meter_provider = MeterProvider(resource=resource, metric_readers=readers, views=views)
        self.tracer = self._tracer_provider.get_tracer("reson8_kafka.worker")
        self._counts: Counter[tuple[str, ...]] = Counter()  # hot-path counters
        self._active: Counter[str] = Counter()  # live sessions by endpoint
        self.lag_source: Callable[[], Mapping[str, int]] = dict  # partition -> records behind
        self._uncovered = 0.0
        self._ready = 0
        self._instruments(uncovered_bound_s)

    def _instruments(self, bound_s: float) -> None:
        meter = self._meter_provider.get_meter("reson8_kafka.worker")
        gauge, counter = meter.create_observable_gauge, meter.create_observable_counter
        gauge("reson8.sessions.active", [self._observe_active], description="live sessions")
        counter("reson8.audio.received", [self._observe("audio_in")], unit="s")
        self.audio_transcribed = meter.create_counter("reson8.audio.transcribed", unit="s")
        counter("reson8.records", [self._observe("records")], description="records by outcome")
        counter("reson8.dead_letters", [self._observe("dlq")], description="by error code")
        self.connections = meter.create_counter("reson8.upstream.connections")
        self.upstream_latency = meter.create_histogram("reson8.upstream.latency", unit="s")
        gauge("reson8.uncovered_audio", [lambda o: [Observation(self._uncovered)]], unit="s")
        gauge("reson8.uncovered_audio.bound", [lambda o: [Observation(bound_s)]], unit="s")
        self.held = meter.create_histogram("reson8.uncovered_audio.held", unit="s")
        gauge("reson8.consumer.lag", [self._observe_lag], description="records behind")
        self.checkpoint_writes = meter.create_counter("reson8.checkpoint.writes")
        self.checkpoint_write = meter.create_histogram("reson8.checkpoint.write", unit="s")
        self.rebalances = meter.create_counter("reson8.rebalances")
        self.rebalance_duration = meter.create_histogram("reson8.rebalance.duration", unit="s")
        self.resumed = meter.create_counter("reson8.sessions.resumed")
        self.failed = meter.create_counter("reson8.sessions.failed")
        self.loop_lag = meter.create_histogram("reson8.event_loop.lag", unit="s")
        self.input_delay = meter.create_histogram(
            "reson8.input.delay", unit="s", description="record written -> handled (per run)"
        )
        gauge("reson8.worker.ready", [lambda o: [Observation(self._ready)]])

    # ------------------------------------------------------------------ recording

    def count(self, family: str, amount: float = 1, *labels: str) -> None:
        """Add to a hot-path counter (``records``/outcome, ``dlq``/code, ``audio_in``)."""
        self._counts[(family, *labels)] += amount  # type: ignore[assignment]

    def record_outcome(self, outcome: str) -> None:
        """One input record was processed, dead-lettered or skipped."""
        self._counts[("records", outcome)] += 1

    def dead_lettered(self, code: str) -> None:
        self._counts[("dlq", code)] += 1
        self._counts[("records", "dead_lettered")] += 1

    def session_started(self, endpoint: str, *, resumed: bool) -> None:
        self._active[endpoint] += 1
        if resumed:
            self.resumed.add(1)

    def session_finished(self, session: SessionView) -> None:
        endpoint = session.config.endpoint
        self._active[endpoint] = max(0, self._active[endpoint] - 1)
        self.held.record(session.max_held_seconds)
        if session.state == "failed" and session.failure is not None:
            self.failed.add(1, {"code": session.failure.code})

    def connected(self, reason: str | None) -> None:
        """An upstream connection opened (``reason`` None: the first)."""
        kind = "connect" if reason is None else "reconnect"
        self.connections.add(1, {"kind": kind, "reason": reason or ""})

    def observe_sessions(self, sessions: Iterable[SessionView]) -> None:
        """Periodic: the largest uncovered audio any live session holds."""
        self._uncovered = max((s.uncovered_seconds for s in sessions), default=0.0)

    def set_ready(self, ready: bool) -> None:
        self._ready = int(ready)

    def checkpoint_written(self, seconds: float) -> None:
        self.checkpoint_writes.add(1)
        self.checkpoint_write.record(seconds)

    def rebalanced(self, seconds: float) -> None:
        self.rebalances.add(1)
        self.rebalance_duration.record(seconds)

    # ------------------------------------------------------------------ observation

    def _observe(self, family: str) -> Any:
        label = {"records": "outcome", "dlq": "code"}.get(family)

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(value, {label: key[1]} if label else {})
                for key, value in list(self._counts.items())
                if key[0] == family
            ]

        return observe

    def _observe_active(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"endpoint": e}) for e, n in self._active.items()]

    def _observe_lag(self, options: CallbackOptions) -> Iterable[Observation]:
        """Computed at each scrape, for the partitions assigned then: a moved
        partition's series ends with its move."""
        return [Observation(lag, {"partition": tp}) for tp, lag in self.lag_source().items()]

    def scrape(self) -> bytes:
        """The Prometheus text exposition of every metric (``/metrics``)."""
        return generate_latest(self.registry)

    # ------------------------------------------------------------------ traces

    def session_span(self, session_id: str, carrier: Mapping[str, str]) -> Span:
        """Start the span of a session, child of the producer's trace context in
        ``carrier`` (the record's ``traceparent``/``tracestate``); end it when the
        session ends."""
        parent = propagate.extract(dict(carrier))
        return self.tracer.start_span(
            "stt.session",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={"stt.session_id": session_id},
        )

    def child_span(
        self, name: str, parent: Span | None, attributes: Mapping[str, str | int]
    ) -> Span:
        """Start a span under ``parent`` (an upstream connection, an emitted
        event); a new trace when there is no parent."""
        ctx = trace.set_span_in_context(parent, Context()) if parent is not None else Context()
        return self.tracer.start_span(name, context=ctx, attributes=dict(attributes))

    @staticmethod
    def headers_of(span: Span) -> list[tuple[str, bytes]]:
        """``traceparent`` (and ``tracestate``) headers naming ``span``."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span, Context()))
        return [(k, v.encode()) for k, v in carrier.items()]

    def shutdown(self) -> None:
        """Flush exporters."""
        self._tracer_provider.shutdown()
        self._meter_provider.shutdown()


def _exporters(
    exporter: Exporter, otlp_endpoint: str | None
) -> tuple[SpanExporter | None, list[MetricReader]]:
    if exporter == "console":
        return ConsoleSpanExporter(), [PeriodicExportingMetricReader(ConsoleMetricExporter())]
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        traces = f"{otlp_endpoint}/v1/traces" if otlp_endpoint else None
        metrics = f"{otlp_endpoint}/v1/metrics" if otlp_endpoint else None
        return OTLPSpanExporter(endpoint=traces), [
            PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=metrics))
        ]
    return None, []


__all__: Sequence[str] = ["SCRAPE_CONTENT_TYPE", "Telemetry"]
