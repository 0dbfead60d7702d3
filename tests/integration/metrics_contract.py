"""The worker's Prometheus metrics, as the chart's dashboard and alerts may use them.

``METRICS`` is the contract with the worker (issue 15; docs/operations.md):
family name -> (type, labels of its own). Every series also carries the
target labels the scrape adds (``TARGET_LABELS``). A histogram family is
queried through its ``_bucket``, ``_sum`` and ``_count`` series. ``up`` is
made by Prometheus for every target and may be used too.

``promql()`` parses expressions with Prometheus' own parser (the
``monitoring-lint`` tool) and returns their selectors; ``synthetic_series()``
gives one live series per family for ``promtool test rules``.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.helm_chart import run, tool

Json = dict[str, Any]

Labels = dict[str, tuple[str, ...]]  # label -> values the worker gives it
OUTCOMES = ("processed", "dead_lettered", "skipped")
CODES = ("undecodable_audio", "bad_header", "oversized", "session_failed")
REASONS = ("connection_lost", "http_429", "closed_1011", "stall", "takeover")
METRICS: dict[str, tuple[str, Labels]] = {
    "reson8_sessions_active": ("gauge", {"endpoint": ("realtime", "turns")}),
    "reson8_audio_received_seconds_total": ("counter", {}),
    "reson8_audio_transcribed_seconds_total": ("counter", {}),
    "reson8_records_total": ("counter", {"outcome": OUTCOMES}),
    "reson8_dead_letters_total": ("counter", {"code": CODES}),
    "reson8_upstream_connections_total": (
        "counter",
        {"kind": ("connect", "reconnect"), "reason": REASONS},
    ),
    "reson8_upstream_latency_seconds": ("histogram", {}),
    "reson8_uncovered_audio_seconds": ("gauge", {}),
    "reson8_uncovered_audio_bound_seconds": ("gauge", {}),
    "reson8_uncovered_audio_held_seconds": ("histogram", {}),
    "reson8_consumer_lag": ("gauge", {"partition": ("0", "1")}),
    "reson8_checkpoint_writes_total": ("counter", {}),
    "reson8_checkpoint_write_seconds": ("histogram", {}),
    "reson8_rebalances_total": ("counter", {}),
    "reson8_rebalance_duration_seconds": ("histogram", {}),
    "reson8_sessions_resumed_total": ("counter", {}),
    "reson8_sessions_failed_total": (
        "counter",
        {"code": ("UNAUTHORIZED", "upstream_unstable", "undecodable_audio")},
    ),
    "reson8_event_loop_lag_seconds": ("histogram", {}),
    "reson8_worker_ready": ("gauge", {}),
}
TARGET_LABELS = ("namespace", "pod", "job")
SCRAPE_MADE: dict[str, tuple[str, Labels]] = {"up": ("gauge", {})}
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")

# Where the chart's tests pretend to run (helm template stt ... --namespace speech).
NAMESPACE = "speech"
JOB = "stt-reson8-kafka"  # the Service's name = the ServiceMonitor's job label
POD = "stt-reson8-kafka-0"


def family_of(series: str) -> str | None:
    """The family a queried series name belongs to, or None when it is not the worker's."""
    if series in SCRAPE_MADE:
        return series
    if series in METRICS and METRICS[series][0] != "histogram":
        return series
    for suffix in HISTOGRAM_SERIES:
        base = series.removesuffix(suffix)
        if base != series and base in METRICS and METRICS[base][0] == "histogram":
            return base
    return None


def labels_of(family: str) -> set[str]:
    """Labels a family's series carry (``le`` for histogram buckets)."""
    kind, own = {**METRICS, **SCRAPE_MADE}[family]
    extra = {"le"} if kind == "histogram" else set()
    return {*TARGET_LABELS, *own, *extra}


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, op, value)


@dataclass(frozen=True)
class Parsed:
    expr: str
    error: str
    selectors: tuple[Selector, ...]


def promql(exprs: list[str]) -> list[Parsed]:
    """Parse every expression with Prometheus' parser; errors are reported, not raised."""
    done = run(tool("monitoring-lint"), "promql", stdin=json.dumps(exprs))
    assert done.returncode == 0, done.stderr
    reports = json.loads(done.stdout)
    return [
        Parsed(
            expr,
            report.get("error", ""),
            tuple(
                Selector(s["name"], tuple((m["label"], m["op"], m["value"]) for m in s["matchers"]))
                for s in report["selectors"]
            ),
        )
        for expr, report in zip(exprs, reports, strict=True)
    ]


def series_text(name: str, labels: dict[str, str]) -> str:
    """promtool's series notation, with the release's target labels (pod: ``POD`` unless given)."""
    base = {"namespace": NAMESPACE, "job": JOB, "pod": POD, **labels}
    return name + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(base.items())) + "}"


def _label_sets(own: Labels) -> list[dict[str, str]]:
    """Every combination of the family's label values."""
    return [dict(zip(own, combo, strict=True)) for combo in itertools.product(*own.values())]


def _family_series(family: str, kind: str, labels: dict[str, str]) -> list[Json]:
    if kind != "histogram":
        values = "0+10x30" if kind == "counter" else "1x30"
        return [{"series": series_text(family, labels), "values": values}]
    return [
        {"series": series_text(family + "_bucket", {**labels, "le": "0.5"}), "values": "0+6x30"},
        {"series": series_text(family + "_bucket", {**labels, "le": "+Inf"}), "values": "0+10x30"},
        {"series": series_text(family + "_sum", labels), "values": "0+3x30"},
        {"series": series_text(family + "_count", labels), "values": "0+10x30"},
    ]


def synthetic_series() -> list[Json]:
    """Every series of every family (each combination of its label values), alive for
    30 minutes, in promtool's ``input_series`` form: counters rise, gauges hold at 1."""
    return [
        series
        for family, (kind, own) in {**METRICS, **SCRAPE_MADE}.items()
        for labels in _label_sets(own)
        for series in _family_series(family, kind, labels)
    ]


def promtool_test_rules(folder: Path, groups: list[Json], tests: list[Json]) -> str:
    """Run ``promtool test rules`` on rule groups and unit tests; returns its output.

    Fails the calling test with promtool's report when a case does not hold.
    """
    rules = folder / "rules.json"  # JSON is YAML: promtool reads it as is
    rules.write_text(json.dumps({"groups": groups}, indent=1))
    suite = folder / "rules-test.json"
    suite.write_text(json.dumps({"rule_files": [str(rules)], "tests": tests}, indent=1))
    done = run(tool("promtool"), "test", "rules", str(suite))
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout
