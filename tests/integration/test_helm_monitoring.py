"""The chart's monitoring: ServiceMonitor, Grafana dashboard and PrometheusRule, offline.

What each check relies on:

- the scrape path: the ServiceMonitor's endpoint names a port of the Service it
  selects, whose targetPort is the container port the worker listens on (the
  port ``workers.settings`` reads from the chart's ``RESON8_KAFKA_WEB_PORT``);
- PromQL: Prometheus' own parser (``monitoring-lint promql``) for syntax and the
  selectors of every expression, which may name only the worker's metric
  families (``METRICS``) and ``up``;
- the dashboard: the Grafana Foundation SDK's strict decoder
  (``monitoring-lint dashboard``), then the panels, variables and matchers here;
- the alerts: ``promtool check rules`` on the rendered PrometheusRule, and
  ``promtool test rules`` feeding synthetic series to the rules as rendered.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.helm_chart import (
    FULL,
    Doc,
    container,
    env_of,
    find,
    render,
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

    env = dict(find(docs, "ConfigMap")["data"])
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
