"""OpenTelemetry tracing and metrics of the worker.

Traces: the producer's ``traceparent`` header is the parent of the session
span; the upstream connection and each emitted event get spans under the
session span; every output record carries the ``traceparent`` of its event
span (W3C trace context). Metrics: active sessions, audio seconds in and
transcribed, upstream latency, reconnects, DLQ records, consumer lag.

Exporters: ``none`` (spans still exist, so ``traceparent`` propagates),
``console``, ``otlp`` (HTTP; endpoint from settings or the standard
``OTEL_EXPORTER_OTLP_ENDPOINT``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind

Exporter = Literal["none", "console", "otlp"]


class Telemetry:
    """Tracer and meters of one worker process. Call :meth:`shutdown` at exit."""

    def __init__(
        self,
        exporter: Exporter = "none",
        service_name: str = "reson8-kafka-worker",
        otlp_endpoint: str | None = None,
    ) -> None:
        resource = Resource.create({"service.name": service_name})
        self._tracer_provider = TracerProvider(resource=resource)
        span_exporter, readers = _exporters(exporter, otlp_endpoint)
        if span_exporter is not None:
            self._tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        self._meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        self.tracer = self._tracer_provider.get_tracer("reson8_kafka.worker")
        meter = self._meter_provider.get_meter("reson8_kafka.worker")
        self.active_sessions = meter.create_up_down_counter(
            "reson8.sessions.active", description="sessions with an open upstream stream"
        )
        self.audio_in = meter.create_counter(
            "reson8.audio.in", unit="s", description="audio seconds received from Kafka"
        )
        self.audio_transcribed = meter.create_counter(
            "reson8.audio.transcribed", unit="s", description="audio seconds covered by finals"
        )
        self.upstream_latency = meter.create_histogram(
            "reson8.upstream.latency", unit="ms", description="audio sent -> final received"
        )
        self.reconnects = meter.create_counter("reson8.upstream.reconnects")
        self.dlq_records = meter.create_counter("reson8.dlq.records")
        self._lag: dict[str, int] = {}
        meter.create_observable_gauge(
            "reson8.consumer.lag", callbacks=[self._observe_lag], description="records behind"
        )

    def set_lag(self, partition: str, lag: int) -> None:
        """Record the consumer lag of one partition (observed by the gauge)."""
        self._lag[partition] = lag

    def _observe_lag(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(lag, {"partition": tp}) for tp, lag in self._lag.items()]

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

    def child_span(self, name: str, parent: Span, attributes: Mapping[str, str | int]) -> Span:
        """Start a span under ``parent`` (an upstream connection, an emitted event)."""
        ctx = trace.set_span_in_context(parent, Context())
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
