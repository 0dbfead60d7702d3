"""Telemetry: the ``/metrics`` exposition and the trace context of records.

Read back the way Prometheus reads it (``prometheus_client``'s text parser):
every family of the module docstring's table is exposed, with its type and
labels, once it has data (the unlabelled gauges always); counters and
histograms move with the recording calls; histogram buckets are seconds.
Traces: spans with and without a parent, the W3C ``traceparent`` a record
carries, and a session span continuing the producer's trace.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.trace import format_span_id, format_trace_id
from prometheus_client.parser import text_string_to_metric_families

from workers import telemetry as telemetry_module
from workers.telemetry import Telemetry

PRODUCER_TRACE = "0af7651916cd43dd8448eb211c80319c"
PRODUCER_SPAN = "b7ad6b7169203331"
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


@dataclass
class Config:
    endpoint: str


@dataclass
class Failure:
    code: str


@dataclass
class FinishedSession:
    config: Config
    state: str = "ended"
    uncovered_seconds: float = 0.0
    max_held_seconds: float = 1.5
    failure: Failure | None = None


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry()
    yield t
    t.shutdown()


def families(t: Telemetry) -> dict[str, Any]:
    """Metric families by their exposed name (counters keep ``_total``)."""
    out = {}
    for family in text_string_to_metric_families(t.scrape().decode()):
        name = family.name + "_total" if family.type == "counter" else family.name
        out[name] = family
    return out


def value(t: Telemetry, name: str, **labels: str) -> float:
    """The one sample of ``name`` (a series name, e.g. ``x_total`` or ``x_bucket``)
    whose labels include ``labels``."""
    found = [
        s.value
        for f in families(t).values()
        for s in f.samples
        if s.name == name and labels.items() <= s.labels.items()
    ]
    assert len(found) == 1, (name, labels, found)
    return float(found[0])


def bucket(t: Telemetry, histogram: str, le: float) -> float:
    """The cumulative count of ``histogram``'s bucket with upper bound ``le`` (seconds)."""
    [count] = [
        s.value
        for s in families(t)[histogram].samples
        if s.name == histogram + "_bucket" and float(s.labels["le"]) == le
    ]
    return float(count)


def documented_families() -> list[tuple[str, str, set[str]]]:
    """(name, type, labels) of each row of the module docstring's table."""
    rows = []
    for line in (telemetry_module.__doc__ or "").splitlines():
        parts = line.split()
        if parts and parts[0].startswith("reson8_"):
            labels = {p.strip(",") for p in parts[2:]}
            rows.append((parts[0], parts[1], labels))
    return rows


def exercise_everything(t: Telemetry) -> None:
    t.count("audio_in", 2.5)
    t.record_outcome("processed")
    t.dead_lettered("bad_header")
    t.connected(None)
    t.session_started("realtime", resumed=True)
    t.session_finished(
        FinishedSession(Config("realtime"), state="failed", failure=Failure("upstream_refused"))
    )
    t.checkpoint_written(0.003)
    t.rebalanced(0.7)
    t.lag_source = lambda: {"stt.audio:0": 5}
    t.upstream_latency.record(0.3)
    t.loop_lag.record(0.002)
    t.input_delay.record(0.004)
    t.audio_transcribed.add(1.0)
    t.session_started("turns", resumed=False)


# -- the exposition ---------------------------------------------------------------------


def test_the_documented_table_is_not_empty() -> None:
    assert len(documented_families()) >= 19


def test_every_documented_family_is_exposed_with_its_type_and_labels(
    telemetry: Telemetry,
) -> None:
    exercise_everything(telemetry)
    exposed = families(telemetry)
    for name, kind, labels in documented_families():
        assert name in exposed, name
        family = exposed[name]
        assert family.type == kind, name
        for sample in family.samples:
            assert labels <= sample.labels.keys(), (name, sample.labels)


def test_the_unlabelled_gauges_are_exposed_before_any_data(telemetry: Telemetry) -> None:
    exposed = families(telemetry)
    for name in (
        "reson8_uncovered_audio_seconds",
        "reson8_uncovered_audio_bound_seconds",
        "reson8_worker_ready",
    ):
        assert exposed[name].type == "gauge"
    assert value(telemetry, "reson8_worker_ready") == 0
    assert value(telemetry, "reson8_uncovered_audio_bound_seconds") == 30.0


def test_the_uncovered_bound_is_the_configured_one() -> None:
    t = Telemetry(uncovered_bound_s=12.5)
    assert value(t, "reson8_uncovered_audio_bound_seconds") == 12.5
    t.shutdown()


# -- counters and gauges --------------------------------------------------------------------


def test_records_are_counted_by_outcome(telemetry: Telemetry) -> None:
    telemetry.record_outcome("processed")
    telemetry.record_outcome("processed")
    telemetry.record_outcome("skipped")
    assert value(telemetry, "reson8_records_total", outcome="processed") == 2
    assert value(telemetry, "reson8_records_total", outcome="skipped") == 1


def test_a_dead_letter_counts_its_code_and_a_dead_lettered_record(telemetry: Telemetry) -> None:
    telemetry.dead_lettered("oversized")
    telemetry.dead_lettered("oversized")
    telemetry.dead_lettered("bad_header")
    assert value(telemetry, "reson8_dead_letters_total", code="oversized") == 2
    assert value(telemetry, "reson8_dead_letters_total", code="bad_header") == 1
    assert value(telemetry, "reson8_records_total", outcome="dead_lettered") == 3


def test_received_audio_adds_up(telemetry: Telemetry) -> None:
    telemetry.count("audio_in", 1.25)
    telemetry.count("audio_in", 0.5)
    assert value(telemetry, "reson8_audio_received_seconds_total") == 1.75


def test_connections_are_counted_by_kind_and_reason(telemetry: Telemetry) -> None:
    telemetry.connected(None)
    telemetry.connected("http_503")
    telemetry.connected("http_503")
    name = "reson8_upstream_connections_total"
    assert value(telemetry, name, kind="connect", reason="") == 1
    assert value(telemetry, name, kind="reconnect", reason="http_503") == 2


def test_active_sessions_follow_starts_and_finishes_per_endpoint(telemetry: Telemetry) -> None:
    telemetry.session_started("realtime", resumed=False)
    telemetry.session_started("realtime", resumed=True)
    telemetry.session_started("turns", resumed=False)
    telemetry.session_finished(FinishedSession(Config("realtime")))
    assert value(telemetry, "reson8_sessions_active", endpoint="realtime") == 1
    assert value(telemetry, "reson8_sessions_active", endpoint="turns") == 1
    assert value(telemetry, "reson8_sessions_resumed_total") == 1


def test_active_sessions_never_go_below_zero(telemetry: Telemetry) -> None:
    telemetry.session_finished(FinishedSession(Config("realtime")))
    assert value(telemetry, "reson8_sessions_active", endpoint="realtime") == 0


def test_a_failed_session_is_counted_by_code_and_its_held_audio_recorded(
    telemetry: Telemetry,
) -> None:
    telemetry.session_started("realtime", resumed=False)
    telemetry.session_finished(
        FinishedSession(
            Config("realtime"),
            state="failed",
            max_held_seconds=4.0,
            failure=Failure("upstream_unstable"),
        )
    )
    assert value(telemetry, "reson8_sessions_failed_total", code="upstream_unstable") == 1
    assert value(telemetry, "reson8_uncovered_audio_held_seconds_count") == 1
    assert value(telemetry, "reson8_uncovered_audio_held_seconds_sum") == 4.0


def test_checkpoint_writes_and_rebalances_are_counted_and_timed(telemetry: Telemetry) -> None:
    telemetry.checkpoint_written(0.004)
    telemetry.checkpoint_written(0.006)
    telemetry.rebalanced(1.5)
    assert value(telemetry, "reson8_checkpoint_writes_total") == 2
    assert value(telemetry, "reson8_checkpoint_write_seconds_count") == 2
    assert value(telemetry, "reson8_rebalances_total") == 1
    assert value(telemetry, "reson8_rebalance_duration_seconds_sum") == 1.5


def test_lag_is_read_at_each_scrape_for_the_partitions_assigned_then(
    telemetry: Telemetry,
) -> None:
    assigned = {"stt.audio:0": 5, "stt.audio:1": 7}
    telemetry.lag_source = lambda: dict(assigned)
    assert value(telemetry, "reson8_consumer_lag", partition="stt.audio:1") == 7
    assigned["stt.audio:1"] = 3
    del assigned["stt.audio:0"]  # moved to another worker
    assert value(telemetry, "reson8_consumer_lag", partition="stt.audio:1") == 3
    series = [s.labels["partition"] for s in families(telemetry)["reson8_consumer_lag"].samples]
    assert series == ["stt.audio:1"]


def test_uncovered_audio_is_the_largest_any_live_session_holds(telemetry: Telemetry) -> None:
    telemetry.observe_sessions(
        [FinishedSession(Config("realtime"), uncovered_seconds=s) for s in (1.0, 4.5, 2.0)]
    )
    assert value(telemetry, "reson8_uncovered_audio_seconds") == 4.5
    telemetry.observe_sessions([])
    assert value(telemetry, "reson8_uncovered_audio_seconds") == 0


def test_readiness_is_exposed_as_one_or_zero(telemetry: Telemetry) -> None:
    telemetry.set_ready(True)
    assert value(telemetry, "reson8_worker_ready") == 1
    telemetry.set_ready(False)
    assert value(telemetry, "reson8_worker_ready") == 0


# -- histogram buckets are seconds --------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "name", "below", "above"),
    [
        pytest.param(
            lambda t: t.checkpoint_written(0.003),
            "reson8_checkpoint_write_seconds",
            0.0025,
            0.005,
            id="checkpoint write 3 ms",
        ),
        pytest.param(
            lambda t: t.rebalanced(0.7),
            "reson8_rebalance_duration_seconds",
            0.5,
            1.0,
            id="rebalance 0.7 s",
        ),
        pytest.param(
            lambda t: t.upstream_latency.record(0.3),
            "reson8_upstream_latency_seconds",
            0.25,
            0.5,
            id="upstream latency 0.3 s",
        ),
        pytest.param(
            lambda t: t.loop_lag.record(0.02),
            "reson8_event_loop_lag_seconds",
            0.01,
            0.025,
            id="loop lag 20 ms",
        ),
        pytest.param(
            lambda t: t.held.record(2.5),
            "reson8_uncovered_audio_held_seconds",
            2.0,
            3.0,
            id="held 2.5 s",
        ),
    ],
)
def test_histogram_buckets_are_seconds(
    telemetry: Telemetry, record: Any, name: str, below: float, above: float
) -> None:
    record(telemetry)
    assert bucket(telemetry, name, below) == 0
    assert bucket(telemetry, name, above) == 1


def test_an_upstream_latency_reported_by_a_session_lands_in_its_seconds_bucket(
    telemetry: Telemetry,
) -> None:
    """Regression: Registry.on_latency recorded milliseconds into this seconds histogram."""
    from workers.publisher import OutputTopics, Publisher
    from workers.registry import Registry
    from workers.settings import Settings

    class NoProducer:
        async def send(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("nothing is produced here")

    async def ack(event: Any) -> None:
        raise AssertionError("nothing is acked here")

    topics = OutputTopics("t", "u", "s", "d")
    registry = Registry(Settings(), Publisher(NoProducer(), telemetry, topics), ack, telemetry)
    registry.on_latency(0.3)  # what SessionPump passes on from Session.take_latencies()
    assert bucket(telemetry, "reson8_upstream_latency_seconds", 0.5) == 1


# -- traces ---------------------------------------------------------------------------------


def test_a_span_without_parent_starts_a_new_trace(telemetry: Telemetry) -> None:
    first = telemetry.child_span("emit transcript", None, {"stt.event_id": "a"})
    second = telemetry.child_span("emit transcript", None, {"stt.event_id": "b"})
    first.end()
    second.end()
    assert first.get_span_context().is_valid
    assert first.get_span_context().trace_id != second.get_span_context().trace_id


def test_a_child_span_continues_its_parents_trace(telemetry: Telemetry) -> None:
    parent = telemetry.child_span("stt.upstream", None, {})
    child = telemetry.child_span("emit transcript", parent, {"n": 1})
    child.end()
    parent.end()
    assert child.get_span_context().trace_id == parent.get_span_context().trace_id
    assert child.parent is not None  # type: ignore[attr-defined]
    assert child.parent.span_id == parent.get_span_context().span_id  # type: ignore[attr-defined]


def test_headers_of_a_span_are_a_w3c_traceparent_naming_it(telemetry: Telemetry) -> None:
    span = telemetry.child_span("dead_letter", None, {})
    span.end()
    headers = dict(telemetry.headers_of(span))
    match = TRACEPARENT.match(headers["traceparent"].decode())
    assert match is not None
    assert match[1] == format_trace_id(span.get_span_context().trace_id)
    assert match[2] == format_span_id(span.get_span_context().span_id)


def test_a_session_span_continues_the_producers_trace(telemetry: Telemetry) -> None:
    carrier = {"traceparent": f"00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01"}
    span = telemetry.session_span("call-1", carrier)
    span.end()
    assert format_trace_id(span.get_span_context().trace_id) == PRODUCER_TRACE
    assert format_span_id(span.parent.span_id) == PRODUCER_SPAN  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "carrier",
    [{}, {"traceparent": "garbage"}, {"traceparent": f"00-{'0' * 32}-{PRODUCER_SPAN}-01"}],
    ids=["no context", "unreadable", "all-zero trace id"],
)
def test_a_session_span_without_a_usable_producer_context_starts_a_new_trace(
    telemetry: Telemetry, carrier: dict[str, str]
) -> None:
    span = telemetry.session_span("call-1", carrier)
    span.end()
    assert span.get_span_context().is_valid
    assert span.parent is None  # type: ignore[attr-defined]
