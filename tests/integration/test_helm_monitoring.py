"""The chart's ServiceMonitor and Grafana dashboard, checked offline.

- the scrape path: the ServiceMonitor's endpoint names a port of the Service it
  selects, whose targetPort is the container port the worker listens on (the
  port ``workers.settings`` reads from the chart's ``RESON8_KAFKA_WEB_PORT``);
- the dashboard: the Grafana Foundation SDK's strict decoder
  (``monitoring-lint dashboard``); every query parsed by Prometheus' parser
  (``monitoring-lint promql``), naming only the worker's metric families
  (``metrics_contract.METRICS``) and ``up``; and each query evaluated by
  ``promtool`` against one series per family, so none comes back empty.

The PrometheusRule is checked in ``test_helm_alerts.py``.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import pytest

from tests.integration.helm_chart import (
    CHART,
    FULL,
    Doc,
    container,
    env_of,
    find,
    render,
    run,
    settings_map,
    tool,
)
from tests.integration.metrics_contract import (
    JOB,
    METRICS,
    NAMESPACE,
    Parsed,
    family_of,
    labels_of,
    promql,
    promtool_test_rules,
    synthetic_series,
)

pytestmark = pytest.mark.timeout(300)

MONITOR_ON = "monitoring.serviceMonitor.enabled=true"


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-monitoring")


@pytest.fixture(scope="module")
def full_docs(tmp: Path) -> list[Doc]:
    return render(tmp, values=FULL)


# --- the scrape path -------------------------------------------------------------------------


def expression_holds(expression: Doc, labels: dict[str, str]) -> bool:
    """One matchExpressions item of a Kubernetes LabelSelector."""
    key, values = expression["key"], expression.get("values", [])
    match expression["operator"]:
        case "In":
            return labels.get(key) in values
        case "NotIn":
            return labels.get(key) not in values
        case "Exists":
            return key in labels
        case "DoesNotExist":
            return key not in labels
    raise AssertionError(f"unknown operator {expression['operator']}")


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels and matchExpressions) applied to labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    return all(expression_holds(e, labels) for e in selector.get("matchExpressions", []))


def scraped_service(docs: list[Doc], monitor: Doc) -> Doc:
    """The one Service of the chart that the ServiceMonitor's selector picks."""
    services = [d for d in docs if d["kind"] == "Service"]
    picked = [s for s in services if selects(monitor["spec"]["selector"], s["metadata"]["labels"])]
    assert len(picked) == 1, [s["metadata"]["name"] for s in picked]
    return picked[0]


def worker_web_port(docs: list[Doc]) -> int:
    """The port the worker's web server binds, as workers/settings.py reads the pod's env."""
    from workers.settings import Settings

    env = dict(settings_map(docs)["data"])
    env.update({name: "dummy" for name in env_of(container(docs))})
    return Settings.from_env(env).web_port


def scraped_container_port(docs: list[Doc], monitor: Doc) -> Doc:
    """Follow ServiceMonitor endpoint -> Service port -> container port."""
    (endpoint,) = monitor["spec"]["endpoints"]
    service = scraped_service(docs, monitor)
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert endpoint["port"] in ports, f"the Service has no port named {endpoint['port']}"
    target = ports[endpoint["port"]]["targetPort"]
    workload = next(d for d in docs if d["kind"] in ("Deployment", "StatefulSet"))
    assert selects(
        {"matchLabels": service["spec"]["selector"]},
        workload["spec"]["template"]["metadata"]["labels"],
    )
    key = "name" if isinstance(target, str) else "containerPort"
    (port,) = [p for p in container(docs)["ports"] if p[key] == target]
    return dict(port)


@pytest.mark.parametrize(
    "sets",
    [(MONITOR_ON,), (MONITOR_ON, "service.port=8080"), ()],
    ids=["deployment", "deployment-service-port-8080", "full-statefulset"],
)
def test_service_monitor_scrapes_metrics_on_the_workers_web_port(
    sets: tuple[str, ...], tmp: Path
) -> None:
    docs = render(tmp, *sets, values=None if sets else FULL)
    monitor = find(docs, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    port = scraped_container_port(docs, monitor)
    assert port["containerPort"] == worker_web_port(docs) == 6066
    assert port["protocol"] == "TCP"
    # The probes use the same port: if /healthz answers, so can /metrics.
    assert container(docs)["readinessProbe"]["httpGet"]["port"] == port["name"]


def test_service_monitor_skips_the_headless_service(full_docs: list[Doc]) -> None:
    monitor = find(full_docs, "ServiceMonitor")
    assert scraped_service(full_docs, monitor)["spec"].get("clusterIP") != "None"
    assert find(full_docs, "Service", "-headless")  # there, and not scraped twice


# --- the dashboard -----------------------------------------------------------------------------

DASHBOARD = CHART / "dashboards" / "reson8-kafka.json"
DASHBOARD_ON = "monitoring.dashboard.enabled=true"
# Grafana's own variables, as Prometheus would receive them.
GRAFANA_MACROS = {"$__rate_interval": "5m"}
SELECTED = (("namespace", "=~", "$namespace"), ("job", "=~", "$job"))


def load_dashboard() -> Doc:
    board: Doc = json.loads(DASHBOARD.read_text())
    return board


def panels(board: Doc) -> list[Doc]:
    return [p for p in board["panels"] if p["type"] != "row"]


def queries(board: Doc) -> list[tuple[Doc, Doc]]:
    """(panel, target) of every query of the dashboard."""
    return [(panel, target) for panel in panels(board) for target in panel["targets"]]


def as_promql(expr: str, variables: dict[str, str] | None = None) -> str:
    """A panel's expression with Grafana's macros (and optionally its variables) filled in."""
    for name, value in {**GRAFANA_MACROS, **(variables or {})}.items():
        expr = expr.replace(name, value)
    return expr


@pytest.fixture(scope="module")
def board() -> Doc:
    return load_dashboard()


@pytest.fixture(scope="module")
def parsed_queries(board: Doc) -> list[tuple[Doc, Parsed]]:
    pairs = queries(board)
    parsed = promql([as_promql(target["expr"]) for _, target in pairs])
    return [(panel, p) for (panel, _), p in zip(pairs, parsed, strict=True)]


def test_dashboard_json_is_what_the_generator_writes() -> None:
    done = run(sys.executable, "scripts/dashboard.py", "--check")
    assert done.returncode == 0, done.stderr


def test_dashboard_decodes_strictly_with_grafanas_types() -> None:
    """Unknown fields, wrong types, missing required fields, in panels and queries too."""
    done = run(tool("monitoring-lint"), "dashboard", str(DASHBOARD))
    assert done.returncode == 0, done.stderr


def test_dashboard_lint_rejects_a_broken_dashboard(board: Doc, tmp: Path) -> None:
    """Negative control of the strict decoder."""
    broken = copy.deepcopy(board)
    first = panels(broken)[0]
    first["gridPos"]["w"] = "6"
    first["targets"][0]["exp"] = first["targets"][0].pop("expr")
    path = tmp / "broken.json"
    path.write_text(json.dumps(broken))
    done = run(tool("monitoring-lint"), "dashboard", str(path))
    assert done.returncode == 1
    assert "gridPos.w" in done.stderr
    assert "unexpected field 'exp'" in done.stderr


def test_every_query_parses_and_selects_only_worker_metrics(
    parsed_queries: list[tuple[Doc, Parsed]],
) -> None:
    for panel, parsed in parsed_queries:
        where = f"panel {panel['title']!r}: {parsed.expr}"
        assert not parsed.error, f"{where}: {parsed.error}"
        assert parsed.selectors, where
        for selector in parsed.selectors:
            family = family_of(selector.name)
            assert family is not None, f"{where}: {selector.name!r} is not a worker metric"
            assert set(SELECTED) <= set(selector.matchers), f"{where}: not scoped by the variables"
            used = {label for label, _, _ in selector.matchers}
            assert used <= labels_of(family), f"{where}: {used - labels_of(family)}"


def test_every_metric_family_has_a_panel(parsed_queries: list[tuple[Doc, Parsed]]) -> None:
    shown = {family_of(s.name) for _, parsed in parsed_queries for s in parsed.selectors}
    assert set(METRICS) <= shown, f"no panel for {sorted(set(METRICS) - shown)}"


def grouping(expr: str) -> set[str]:
    """Labels named in every ``by (...)`` of an expression."""
    return {
        label.strip()
        for group in re.findall(r"\bby \(([^)]*)\)", expr)
        for label in group.split(",")
    }


def test_legends_and_groupings_use_labels_the_series_have(
    parsed_queries: list[tuple[Doc, Parsed]], board: Doc
) -> None:
    targets = [target for _, target in queries(board)]
    for (panel, parsed), target in zip(parsed_queries, targets, strict=True):
        families = {family_of(s.name) for s in parsed.selectors} - {None}
        available = set().union(*(labels_of(str(family)) for family in families))
        groups = grouping(parsed.expr)
        assert groups <= available, f"{panel['title']!r} groups by {groups - available}"
        legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target["legendFormat"]))
        assert legend <= groups, f"{panel['title']!r}: legend {legend} not kept by {groups}"


@pytest.mark.parametrize(
    ("family", "by"),
    [
        ("reson8_sessions_active", "endpoint"),
        ("reson8_records_total", "outcome"),
        ("reson8_dead_letters_total", "code"),
        ("reson8_upstream_connections_total", "reason"),
        ("reson8_consumer_lag", "partition"),
        ("reson8_sessions_failed_total", "code"),
    ],
)
def test_breakdowns_the_operators_need(
    family: str, by: str, parsed_queries: list[tuple[Doc, Parsed]]
) -> None:
    assert any(
        by in grouping(p.expr) and family in {family_of(s.name) for s in p.selectors}
        for _, p in parsed_queries
    ), f"no panel shows {family} by {by}"


def panel_families(parsed_queries: list[tuple[Doc, Parsed]], title: str) -> list[Parsed]:
    found = [p for panel, p in parsed_queries if panel["title"] == title]
    assert found, f"no panel {title!r}"
    return found


def test_latency_quantiles_and_uncovered_audio_against_its_bound(
    parsed_queries: list[tuple[Doc, Parsed]],
) -> None:
    latency = panel_families(parsed_queries, "Upstream latency (audio sent to final)")
    exprs = " ".join(p.expr for p in latency)
    for q in ("0.5", "0.99"):
        assert (
            f"histogram_quantile({q}, sum by (le) (rate(reson8_upstream_latency_seconds_bucket"
            in exprs
        )
    coverage = panel_families(parsed_queries, "Uncovered audio per worker vs bound")
    names = {s.name for p in coverage for s in p.selectors}
    assert names == {"reson8_uncovered_audio_seconds", "reson8_uncovered_audio_bound_seconds"}


def test_every_query_returns_data_from_the_worker_series(board: Doc, tmp: Path) -> None:
    """Each query, with the variables set to this release, evaluated by promtool against
    one live series per family (labelled as the contract says): none comes back empty."""
    variables = {"$namespace": NAMESPACE, "$job": JOB}
    rules = [
        {
            "alert": f"EmptyPanel{panel['id']}{target['refId']}",
            "expr": f"absent({as_promql(target['expr'], variables)})",
        }
        for panel, target in queries(board)
    ]
    test = {
        "interval": "1m",
        "input_series": synthetic_series(),
        "alert_rule_test": [
            {"eval_time": "20m", "alertname": rule["alert"], "exp_alerts": []} for rule in rules
        ],
    }
    promtool_test_rules(tmp, [{"name": "dashboard", "rules": rules}], [test])


def test_variables_choose_data_source_namespace_and_job(board: Doc) -> None:
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "job"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "job"):
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        found = re.fullmatch(r"label_values\((\w+)(?:\{.*\})?, (\w+)\)", var["definition"])
        assert found, var["definition"]
        metric, label = found.groups()
        assert metric in METRICS
        assert label == name
        assert var["query"]["query"] == var["definition"]
    assert '{namespace=~"$namespace"}' in variables["job"]["definition"]
    for panel in panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])


def test_layout_has_unique_ids_and_no_overlaps(board: Doc) -> None:
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
    assert board["uid"] == "reson8-kafka"
    assert all(p.get("description") for p in panels(board))


def test_dashboard_is_off_by_default(tmp: Path) -> None:
    names = [d["metadata"]["name"] for d in render(tmp) if d["kind"] == "ConfigMap"]
    assert names == ["stt-reson8-kafka"]


def test_dashboard_ships_in_a_configmap_for_the_grafana_sidecar(tmp: Path) -> None:
    docs = render(tmp, DASHBOARD_ON)
    config = find(docs, "ConfigMap", "-dashboard")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "namespace" not in config["metadata"]  # the release's
    (name,) = config["data"]
    assert json.loads(config["data"][name]) == load_dashboard()
    assert "{{endpoint}}" in config["data"][name]  # shipped as is, not templated by helm


def test_dashboard_configmap_label_namespace_and_folder_come_from_values(
    full_docs: list[Doc], tmp: Path
) -> None:
    config = find(full_docs, "ConfigMap", "-dashboard")
    assert config["metadata"]["namespace"] == "monitoring"
    assert config["metadata"]["annotations"] == {"grafana_folder": "Speech"}
    docs = render(
        tmp,
        DASHBOARD_ON,
        "monitoring.dashboard.label=example.com/dashboard",
        "monitoring.dashboard.labelValue=reson8",
    )
    labels = find(docs, "ConfigMap", "-dashboard")["metadata"]["labels"]
    assert labels["example.com/dashboard"] == "reson8"
    assert "grafana_dashboard" not in labels
