"""The chart's PrometheusRule: rendered, checked and unit-tested offline.

``promtool check rules`` validates the rendered groups (PromQL, durations,
annotation templates); Prometheus' parser (``monitoring-lint``) lists what
each expression selects, which may only be the worker's metric families
(``metrics_contract.METRICS``) and ``up``, scoped to this release; and
``promtool test rules`` feeds synthetic series to the rules as rendered and
checks when each alert fires, with which labels and annotations.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.helm_chart import (
    FULL,
    ROOT,
    Doc,
    find,
    render,
    render_error,
    run,
    tool,
)
from tests.integration.metrics_contract import (
    JOB,
    METRICS,
    NAMESPACE,
    POD,
    Json,
    Parsed,
    family_of,
    labels_of,
    promql,
    promtool_test_rules,
    series_text,
)

pytestmark = pytest.mark.timeout(300)

RULE_ON = "monitoring.prometheusRule.enabled=true"
OPERATIONS = ROOT / "docs" / "operations.md"
# Alert -> its values key and the families its expression must read.
ALERTS: dict[str, tuple[str, set[str]]] = {
    "Reson8KafkaConsumerLagGrowing": ("consumerLagGrowing", {"reson8_consumer_lag"}),
    "Reson8KafkaDeadLetters": ("deadLetters", {"reson8_dead_letters_total"}),
    "Reson8KafkaReconnectStorm": ("reconnectStorm", {"reson8_upstream_connections_total"}),
    "Reson8KafkaUncoveredAudioAboveBound": (
        "uncoveredAudioAboveBound",
        {"reson8_uncovered_audio_seconds", "reson8_uncovered_audio_bound_seconds"},
    ),
    "Reson8KafkaWorkerNotReady": ("workerNotReady", {"reson8_worker_ready", "up"}),
}
RELEASE = (("namespace", "=", NAMESPACE), ("job", "=", JOB))


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-alerts")


@pytest.fixture(scope="module")
def default_docs(tmp: Path) -> list[Doc]:
    return render(tmp, RULE_ON)


@pytest.fixture(scope="module")
def full_docs(tmp: Path) -> list[Doc]:
    return render(tmp, values=FULL)


def groups(docs: list[Doc]) -> list[Doc]:
    found: list[Doc] = find(docs, "PrometheusRule")["spec"]["groups"]
    return found


def rules(docs: list[Doc]) -> dict[str, Doc]:
    return {rule["alert"]: rule for group in groups(docs) for rule in group["rules"]}


def parsed_rules(docs: list[Doc]) -> dict[str, Parsed]:
    by_name = rules(docs)
    return dict(zip(by_name, promql([r["expr"] for r in by_name.values()]), strict=True))


# --- shape -----------------------------------------------------------------------------------


def test_rules_are_off_by_default(tmp: Path) -> None:
    assert not [d for d in render(tmp) if d["kind"] == "PrometheusRule"]


@pytest.mark.parametrize("values", ["default", "full"])
def test_promtool_checks_the_rendered_rules(
    values: str, default_docs: list[Doc], full_docs: list[Doc], tmp: Path
) -> None:
    docs = default_docs if values == "default" else full_docs
    path = tmp / f"rules-{values}.json"
    path.write_text(json.dumps({"groups": groups(docs)}))
    done = run(tool("promtool"), "check", "rules", "--lint=all", "--lint-fatal", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def matcher_values_in_contract(family: str, label: str, op: str, value: str) -> bool:
    """An equality or regex matcher on a worker label names values the worker gives it."""
    own = METRICS[family][1] if family in METRICS else {}
    if label not in own:
        return True
    values = value.split("|") if op in ("=~", "!~") else [value]
    return set(values) <= set(own[label])


def test_expressions_read_only_this_releases_worker_metrics(default_docs: list[Doc]) -> None:
    for alert, parsed in parsed_rules(default_docs).items():
        assert not parsed.error, f"{alert}: {parsed.error}"
        families = {family_of(s.name) for s in parsed.selectors}
        assert families == ALERTS[alert][1], alert
        for selector in parsed.selectors:
            family = str(family_of(selector.name))
            assert set(RELEASE) <= set(selector.matchers), f"{alert}: {selector}"
            for label, op, value in selector.matchers:
                assert label in labels_of(family), f"{alert}: {family} has no label {label}"
                assert matcher_values_in_contract(family, label, op, value), f"{alert}: {value}"


def test_every_alert_has_severity_and_runbook_text(default_docs: list[Doc]) -> None:
    found = rules(default_docs)
    assert set(found) == set(ALERTS)
    for alert, rule in found.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), alert
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook"} <= annotations.keys(), alert
        assert len(annotations["runbook"]) > 100, alert
        assert "runbook_url" not in annotations  # no address unless given one


def test_defaults_match_the_values_file(default_docs: list[Doc]) -> None:
    found = rules(default_docs)
    assert found["Reson8KafkaConsumerLagGrowing"]["for"] == "10m"
    assert "> 20000" in found["Reson8KafkaConsumerLagGrowing"]["expr"]
    assert "[10m]" in found["Reson8KafkaConsumerLagGrowing"]["expr"]
    assert "> 0.1" in found["Reson8KafkaDeadLetters"]["expr"]
    assert 'reason!~"takeover"' in found["Reson8KafkaReconnectStorm"]["expr"]
    assert found["Reson8KafkaWorkerNotReady"]["for"] == "5m"


def test_values_shape_the_rules(full_docs: list[Doc]) -> None:
    rule = find(full_docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    found = rules(full_docs)
    assert "Reson8KafkaDeadLetters" not in found  # disabled in ci/full-values.yaml
    lag = found["Reson8KafkaConsumerLagGrowing"]
    assert (lag["for"], "> 50000" in lag["expr"], "[15m]" in lag["expr"]) == ("15m", True, True)
    storm = found["Reson8KafkaReconnectStorm"]
    assert 'reason!~"takeover|stall"' in storm["expr"]
    assert "> 2.5" in storm["expr"]
    assert "(not counting takeover, stall)" in storm["annotations"]["description"]
    assert storm["labels"] == {"severity": "critical", "team": "speech"}
    assert found["Reson8KafkaWorkerNotReady"]["labels"]["severity"] == "page"
    assert found["Reson8KafkaUncoveredAudioAboveBound"]["for"] == "1m"


def markdown_anchors(text: str) -> set[str]:
    """GitHub's anchors of the headings of a Markdown text (lower case, no punctuation)."""
    headings = re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_runbook_urls_point_at_the_alerts_sections_of_operations_md(
    full_docs: list[Doc],
) -> None:
    anchors = markdown_anchors(OPERATIONS.read_text())
    base = "https://runbooks.example.com/reson8-kafka/operations.md#"
    for alert, rule in rules(full_docs).items():
        url = rule["annotations"]["runbook_url"]
        assert url == base + alert.lower()
        assert alert.lower() in anchors, f"docs/operations.md has no section {alert}"


def test_operations_md_states_the_default_durations(default_docs: list[Doc]) -> None:
    rows = {
        line.split("|")[1].strip(): line
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("| Reson8Kafka")
    }
    for alert, rule in rules(default_docs).items():
        assert f"for {rule['for']}" in rows[alert], f"docs/operations.md: {alert}"
        assert rule["labels"]["severity"] in rows[alert], f"docs/operations.md: {alert}"


def test_selector_can_be_replaced(tmp: Path) -> None:
    docs = render(tmp, RULE_ON, 'monitoring.prometheusRule.selector=cluster="eu-1"\\, job="stt"')
    for alert, parsed in parsed_rules(docs).items():
        for selector in parsed.selectors:
            assert ("cluster", "=", "eu-1") in selector.matchers, alert
            assert ("job", "=", "stt") in selector.matchers, alert
            assert not [m for m in selector.matchers if m[0] == "namespace"], alert


def test_a_rule_without_alerts_is_refused() -> None:
    off = [f"monitoring.prometheusRule.alerts.{key}.enabled=false" for key, _ in ALERTS.values()]
    assert "every alert disabled" in render_error(RULE_ON, *off)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("monitoring.prometheusRule.alerts.consumerLagGrowing.for=10 minutes", "/for"),
        ("monitoring.prometheusRule.alerts.deadLetters.threshold=0", "/threshold"),
        ("monitoring.prometheusRule.alerts.reconnectStorm.window=5", "/window"),
        ("monitoring.prometheusRule.alerts.reconnectStorm.ignoreReasons={a.b}", "ignoreReasons"),
        ("monitoring.prometheusRule.alerts.workerNotReady.thresold=1", "thresold"),
        ('monitoring.prometheusRule.selector={job="x"}', "selector"),
        ("monitoring.prometheusRule.runbookUrl=docs/operations.md", "runbookUrl"),
        ("monitoring.dashboard.label=grafana dashboard", "/monitoring/dashboard/label"),
        ("monitoring.dashboard.namespace=Monitoring", "/monitoring/dashboard/namespace"),
    ],
)
def test_schema_rejects_bad_monitoring_values(setting: str, message: str) -> None:
    error = render_error(setting)
    assert "don't meet the specifications of the schema" in error
    assert message in error


# --- behaviour: promtool test rules ------------------------------------------------------------


@dataclass(frozen=True)
class Firing:
    """One alert expected to fire: the labels its expression keeps, and $value as shown."""

    labels: dict[str, str]
    value: str = ""


@dataclass(frozen=True)
class Case:
    """Series over time, and which alerts of ``alert`` fire at which evaluation times."""

    name: str
    alert: str
    series: list[tuple[str, dict[str, str], str]]  # (metric, labels, promtool values)
    expect: dict[str, list[Firing]] = field(default_factory=dict)  # eval time -> firing


def release(**labels: str) -> dict[str, str]:
    return {"namespace": NAMESPACE, "job": JOB, **labels}


CASES = [
    Case(
        "lag above the threshold and rising fires, counted once per partition",
        "Reson8KafkaConsumerLagGrowing",
        [
            # Partition 0 reported by two pods (a rebalance in flight): counted once.
            ("reson8_consumer_lag", {"partition": "0"}, "10000+1000x60"),
            (
                "reson8_consumer_lag",
                {"partition": "0", "pod": "stt-reson8-kafka-1"},
                "10000+1000x60",
            ),
            ("reson8_consumer_lag", {"partition": "1"}, "0x60"),
        ],
        {"15m": [], "40m": [Firing(release(), "50k")]},
    ),
    Case(
        "a high lag that does not grow is not an alert",
        "Reson8KafkaConsumerLagGrowing",
        [("reson8_consumer_lag", {"partition": "0"}, "30000x60")],
        {"40m": []},
    ),
    Case(
        "a growing lag below the threshold is not an alert",
        "Reson8KafkaConsumerLagGrowing",
        [("reson8_consumer_lag", {"partition": "0"}, "0+100x60")],
        {"40m": []},
    ),
    Case(
        "dead letters above the rate fire per code",
        "Reson8KafkaDeadLetters",
        [
            ("reson8_dead_letters_total", {"code": "undecodable_audio"}, "0+60x30"),
            ("reson8_dead_letters_total", {"code": "oversized"}, "0+1x30"),
        ],
        {"3m": [], "20m": [Firing(release(code="undecodable_audio"), "1")]},
    ),
    Case(
        "reconnects above the rate fire; takeovers and first connects do not count",
        "Reson8KafkaReconnectStorm",
        [
            (
                "reson8_upstream_connections_total",
                {"kind": "reconnect", "reason": "connection_lost"},
                "0+120x30",
            ),
            (
                "reson8_upstream_connections_total",
                {"kind": "reconnect", "reason": "takeover"},
                "0+6000x30",
            ),
            (
                "reson8_upstream_connections_total",
                {"kind": "connect", "reason": "connection_lost"},
                "0+6000x30",
            ),
        ],
        {"3m": [], "20m": [Firing(release(), "2")]},
    ),
    Case(
        "a rebalance's takeovers alone are no storm",
        "Reson8KafkaReconnectStorm",
        [
            (
                "reson8_upstream_connections_total",
                {"kind": "reconnect", "reason": "takeover"},
                "0+6000x30",
            )
        ],
        {"20m": []},
    ),
    Case(
        "uncovered audio above the bound fires for that worker only",
        "Reson8KafkaUncoveredAudioAboveBound",
        [
            ("reson8_uncovered_audio_seconds", {}, "45x30"),
            ("reson8_uncovered_audio_bound_seconds", {}, "30x30"),
            ("reson8_uncovered_audio_seconds", {"pod": "stt-reson8-kafka-1"}, "20x30"),
            ("reson8_uncovered_audio_bound_seconds", {"pod": "stt-reson8-kafka-1"}, "30x30"),
        ],
        {"1m": [], "10m": [Firing(release(pod=POD), "45s")]},
    ),
    Case(
        "a worker not ready or not scraped fires; a rebalance's few minutes do not",
        "Reson8KafkaWorkerNotReady",
        [
            ("reson8_worker_ready", {}, "1x30"),
            ("up", {}, "1x30"),
            ("reson8_worker_ready", {"pod": "stt-reson8-kafka-1"}, "0x30"),
            ("up", {"pod": "stt-reson8-kafka-1"}, "1x30"),
            ("up", {"pod": "stt-reson8-kafka-2"}, "0x30"),
            ("reson8_worker_ready", {"pod": "stt-reson8-kafka-3"}, "1 1 0 0 0 1x25"),
            ("up", {"pod": "stt-reson8-kafka-3"}, "1x30"),
        ],
        {
            "3m": [],
            "20m": [
                Firing(release(pod="stt-reson8-kafka-1"), "0"),
                Firing(release(pod="stt-reson8-kafka-2"), "0"),
            ],
        },
    ),
]


def expand(template: str, labels: dict[str, str], value: str) -> str:
    """The annotation as Prometheus renders it, for the templates the chart uses."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m[1]], template)
    text = re.sub(r"\{\{ \$value \| humanize(Duration)? \}\}", value, text)
    assert "{{" not in text, f"unexpected template in {template!r}"
    return text


def expected(rule: Doc, firing: Firing) -> Json:
    labels = {**firing.labels, **rule["labels"]}
    annotations = {k: expand(v, labels, firing.value) for k, v in rule["annotations"].items()}
    return {"exp_labels": labels, "exp_annotations": annotations}


def promtool_case(case: Case, rule: Doc) -> Json:
    return {
        "name": case.name,
        "interval": "1m",
        "input_series": [
            {"series": series_text(metric, labels), "values": values}
            for metric, labels, values in case.series
        ],
        "alert_rule_test": [
            {
                "eval_time": at,
                "alertname": case.alert,
                "exp_alerts": [expected(rule, f) for f in firing],
            }
            for at, firing in case.expect.items()
        ],
    }


def test_alerts_fire_when_and_as_documented(default_docs: list[Doc], tmp: Path) -> None:
    found = rules(default_docs)
    tests = [promtool_case(case, found[case.alert]) for case in CASES]
    assert {case.alert for case in CASES} == set(ALERTS)
    output = promtool_test_rules(tmp, groups(default_docs), tests)
    assert "SUCCESS" in output


def test_thresholds_from_values_change_what_fires(tmp: Path) -> None:
    docs = render(
        tmp,
        RULE_ON,
        "monitoring.prometheusRule.alerts.consumerLagGrowing.threshold=60000",
        "json:monitoring.prometheusRule.alerts.deadLetters.threshold=1.5",
    )
    found = rules(docs)
    quiet = [
        Case(c.name, c.alert, c.series, {at: [] for at in c.expect})
        for c in CASES
        if c.alert in ("Reson8KafkaConsumerLagGrowing", "Reson8KafkaDeadLetters")
    ]
    promtool_test_rules(tmp, groups(docs), [promtool_case(c, found[c.alert]) for c in quiet])
