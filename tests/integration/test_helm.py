"""The Helm chart (helm/reson8-kafka) and the image's Dockerfile, checked offline.

Rendering, parsing and the tools are in ``tests/integration/helm_chart.py``;
the monitoring resources are checked in ``test_helm_monitoring.py``
(ServiceMonitor, dashboard) and ``test_helm_alerts.py`` (PrometheusRule).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helm_chart import (
    CHART,
    FULL,
    KUBE_VERSIONS,
    ROOT,
    Doc,
    container,
    env_of,
    find,
    kubeconform,
    parse,
    pod_spec,
    render,
    render_error,
    render_text,
    run,
    schema_location,
    settings_map,
    template_cmd,
    tool,
)

# Distinctive dummy secrets: they must show up in Secrets only.
API_KEY = "r8-dummy-api-key-5c1e0b7f"
SASL_PASSWORD = "dummy-sasl-password-93d7a2"
SECRET_VALUES = ("reson8.apiKey=" + API_KEY, "kafka.sasl.password=" + SASL_PASSWORD)
SASL_INLINE = (
    "kafka.securityProtocol=SASL_SSL",
    "kafka.sasl.mechanism=SCRAM-SHA-256",
    "kafka.sasl.username=worker",
    *SECRET_VALUES,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm")


@pytest.fixture(scope="module")
def default_docs(tmp: Path) -> list[Doc]:
    return render(tmp)


@pytest.fixture(scope="module")
def full_docs(tmp: Path) -> list[Doc]:
    return render(tmp, values=FULL)


# --- lint and schema validation -------------------------------------------------------------

SCENARIOS: dict[str, tuple[tuple[str, ...], Path | None]] = {
    "default": ((), None),
    "full": ((), FULL),
    "deployment-hpa-sasl-inline": (("autoscaling.hpa.enabled=true", *SASL_INLINE), None),
    "deployment-keda-sasl-inline": (("autoscaling.keda.enabled=true", *SASL_INLINE), None),
    "statefulset-emptydir": (
        ("workload.kind=StatefulSet", "workload.persistence.enabled=false"),
        None,
    ),
    "monitoring-defaults": (
        (
            "monitoring.serviceMonitor.enabled=true",
            "monitoring.dashboard.enabled=true",
            "monitoring.prometheusRule.enabled=true",
        ),
        None,
    ),
}


@pytest.mark.parametrize("values", [None, FULL], ids=["default", "full"])
def test_lint_strict(values: Path | None) -> None:
    cmd = [tool("helm"), "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSIONS[0]]
    if values is not None:
        cmd += ["-f", str(values)]
    done = run(*cmd)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_kubeconform_validates_every_resource(scenario: str, kube_version: str, tmp: Path) -> None:
    sets, values = SCENARIOS[scenario]
    text = render_text(*sets, values=values)
    summary = kubeconform(text, kube_version)["summary"]
    count = len(parse(text, tmp))
    assert summary == {"valid": count, "invalid": 0, "errors": 0, "skipped": 0}
    print(f"kubeconform {scenario} k8s {kube_version}: {summary}")


BROKEN = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  replicas: "two"
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers: [{name: c, image: i, livenessProbe: {httpGet: {port: http, prot: 1}}}]
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: x}
spec: {scaleTargetRef: {name: x}, maxReplicas: 3, triggers: [{type: kafka, metadata: {}}]}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: x}
spec: {selector: {}, endpoints: [{port: http, intervall: 30s}]}
---
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: x}
spec: {groups: [{name: g, rules: [{alert: A, expr: up == 0, for: 5 minutes}]}]}
"""


def test_offline_schemas_are_strict() -> None:
    """Negative control: the schemas reject unknown fields and wrong types (core and CRDs)."""
    done = run(
        tool("kubeconform"),
        "-strict",
        "-output=json",
        f"-kubernetes-version={KUBE_VERSIONS[0]}",
        f"-schema-location={schema_location(KUBE_VERSIONS[0])}",
        "-",
        stdin=BROKEN,
    )
    results = {r["kind"]: r["msg"] for r in json.loads(done.stdout)["resources"]}
    assert "'prot' not allowed" in results["Deployment"]
    assert "/spec/replicas': got string" in results["Deployment"]
    assert "'maxReplicas' not allowed" in results["ScaledObject"]
    assert "'intervall' not allowed" in results["ServiceMonitor"]
    assert "/spec/groups/0/rules/0/for" in results["PrometheusRule"]  # not a duration


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("workload.replicas=-1", "/workload/replicas': minimum"),
        ("workload.kind=DaemonSet", "/workload/kind"),
        ("kafka.partitions=0", "/kafka/partitions': minimum"),
        ("kafka.securityProtocol=TLS", "/kafka/securityProtocol"),
        ("kafka.sasl.mechanism=GSSAPI", "/kafka/sasl/mechanism"),
        ("config.telemetry.exporter=jaeger", "/config/telemetry/exporter"),
        ("config.drainTimeoutSeconds=0", "drainTimeoutSeconds"),
        ("config.logLevel=verbose", "/config/logLevel"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("autoscaling.keda.lagThreshold=0", "lagThreshold"),
        ("service.port=70000", "port"),
        ("kafka.bootstrapServers=kafka", "bootstrapServers"),
        ("reson8.apiUrl=ftp://example", "apiUrl"),
        ("config.extra.PATH=/bin", "PATH"),
        ("replicaCount=3", "replicaCount"),
        ("terminationGracePeriodSeconds=5", "terminationGracePeriodSeconds"),
    ],
)
def test_schema_rejects_bad_values(setting: str, message: str) -> None:
    error = render_error(setting)
    assert "don't meet the specifications of the schema" in error
    assert message in error


def test_schema_rejects_wrong_types() -> None:
    done = run(*template_cmd((), None), "--set-string", "kafka.partitions=twelve")
    assert done.returncode != 0
    assert "partitions" in done.stderr


# --- what the chart guarantees ---------------------------------------------------------------


def grace(docs: list[Doc]) -> int:
    value: int = pod_spec(docs)["terminationGracePeriodSeconds"]
    return value


def test_grace_period_covers_the_drain(default_docs: list[Doc], full_docs: list[Doc]) -> None:
    assert grace(default_docs) == 20 + 15  # values.yaml: drain 20, margin 15
    assert grace(full_docs) == 75  # explicit, >= 45 + 10
    for docs, drain in ((default_docs, 20), (full_docs, 45)):
        assert grace(docs) >= drain + 10
        config = settings_map(docs)["data"]
        assert float(config["RESON8_KAFKA_DRAIN_TIMEOUT_S"]) == drain


def test_grace_period_follows_a_fractional_drain_timeout(tmp: Path) -> None:
    docs = render(tmp, "json:config.drainTimeoutSeconds=50.5")
    assert grace(docs) == 51 + 15


def test_grace_period_below_drain_plus_ten_fails() -> None:
    error = render_error("config.drainTimeoutSeconds=30", "terminationGracePeriodSeconds=39")
    assert "must be at least config.drainTimeoutSeconds" in error


def test_group_timing_reaches_the_worker(default_docs: list[Doc], full_docs: list[Doc]) -> None:
    """Defaults: a crashed pod's calls move after 10 s; static membership (the
    full values) waits 45 s, long enough for a restart to keep its partitions."""
    for docs, session in ((default_docs, 10), (full_docs, 45)):
        config = settings_map(docs)["data"]
        assert float(config["RESON8_KAFKA_SESSION_TIMEOUT_S"]) == session
        assert float(config["RESON8_KAFKA_HEARTBEAT_INTERVAL_S"]) * 3 <= session


def test_a_heartbeat_longer_than_a_third_of_the_session_timeout_fails() -> None:
    error = render_error("config.heartbeatIntervalSeconds=4")
    assert "at most a third of the session timeout" in error


def test_secrets_never_leave_secret_manifests(tmp: Path) -> None:
    text = render_text("autoscaling.keda.enabled=true", *SASL_INLINE)
    docs = parse(text, tmp)
    needles = [API_KEY, SASL_PASSWORD]
    needles += [base64.b64encode(n.encode()).decode() for n in (API_KEY, SASL_PASSWORD)]
    for doc in docs:
        if doc["kind"] == "Secret":
            continue
        dumped = json.dumps(doc)
        leaked = [n for n in needles if n in dumped]
        assert not leaked, f"{doc['kind']} {doc['metadata']['name']} contains a secret"
    # Not vacuous: the chart's Secret does hold both, and the pods read them from it.
    secret = find(docs, "Secret", "stt-reson8-kafka")["data"]
    assert base64.b64decode(secret["api-key"]).decode() == API_KEY
    assert base64.b64decode(secret["kafka-sasl-password"]).decode() == SASL_PASSWORD
    env = env_of(container(docs))
    assert env["RESON8_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "api-key"
    assert env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "kafka-sasl-password"


def test_configmap_holds_the_settings(full_docs: list[Doc]) -> None:
    data = settings_map(full_docs)["data"]
    assert data["KAFKA_BOOTSTRAP_SERVERS"].startswith("kafka-0.kafka:9093")
    assert data["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert data["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert data["RESON8_KAFKA_APP_ID"] == "acme-stt"
    assert data["RESON8_KAFKA_TOPIC_PREFIX"] == "acme."
    assert data["RESON8_KAFKA_PARTITIONS"] == "24"
    assert data["RESON8_KAFKA_MAX_RECORD_BYTES"] == "1048576"
    assert data["RESON8_KAFKA_TELEMETRY_EXPORTER"] == "otlp"
    assert data["RESON8_KAFKA_RETRY_ATTEMPTS"] == "10"
    assert all(isinstance(v, str) for v in data.values())
    envs = env_of(container(full_docs))
    assert {"RESON8_API_KEY", "KAFKA_SASL_PASSWORD"} <= envs.keys()
    assert not {"RESON8_API_KEY", "KAFKA_SASL_PASSWORD"} & data.keys()


@pytest.mark.parametrize("values", [None, FULL], ids=["default", "full"])
def test_worker_settings_accept_the_pod_environment(values: Path | None, tmp: Path) -> None:
    """The ConfigMap + secret env vars are what workers/settings.py and
    topology/connection.py parse, with the values the chart was given."""
    from topology.connection import KafkaSettings
    from workers.settings import Settings

    docs = render(tmp, values=values)
    env = dict(settings_map(docs)["data"])
    for name, item in env_of(container(docs)).items():
        env[name] = item.get("value", "dummy-secret")  # secretKeyRef / fieldRef
    env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
    settings = Settings.from_env(env)
    kafka = KafkaSettings.from_env(env)
    assert settings.api_key.get_secret_value() == "dummy-secret"
    assert settings.web_port == 6066
    assert settings.bootstrap_servers == kafka.bootstrap_servers
    if values is FULL:
        assert settings.group_instance_id == "dummy-secret"  # set from the pod name
        assert (settings.app_id, settings.topic_prefix, settings.partitions) == (
            "acme-stt",
            "acme.",
            24,
        )
        assert settings.drain_timeout_s == 45
        assert settings.retry_attempts == 10
        assert kafka.uses_sasl
        assert kafka.sasl_mechanism == "SCRAM-SHA-512"
        assert kafka.ssl_cafile is not None
        assert kafka.ssl_cafile.startswith("/etc/reson8-kafka/kafka-tls/")


def test_probes_hit_the_health_port(default_docs: list[Doc]) -> None:
    worker = container(default_docs)
    assert worker["ports"] == [{"name": "http", "containerPort": 6066, "protocol": "TCP"}]
    paths = {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/ready",
    }
    for probe, path in paths.items():
        assert worker[probe]["httpGet"] == {"path": path, "port": "http"}
    assert (
        worker["startupProbe"]["periodSeconds"] * worker["startupProbe"]["failureThreshold"] >= 60
    )
    service = find(default_docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    config = settings_map(default_docs)["data"]
    assert config["RESON8_KAFKA_WEB_PORT"] == "6066"


def test_pods_are_locked_down(default_docs: list[Doc], full_docs: list[Doc]) -> None:
    for docs in (default_docs, full_docs):
        spec = pod_spec(docs)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        worker = container(docs)
        ctx = worker["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
        assert mounts["/tmp"] == "tmp"
        assert mounts[worker["workingDir"]] == "data"  # Faust's datadir lives under it
        assert spec["automountServiceAccountToken"] is False


def test_deployment_uses_empty_dirs(default_docs: list[Doc]) -> None:
    volumes = {v["name"]: v for v in pod_spec(default_docs)["volumes"]}
    assert "emptyDir" in volumes["tmp"]
    assert "emptyDir" in volumes["data"]
    assert find(default_docs, "Deployment")["spec"]["replicas"] == 2


def test_statefulset_has_a_claim_per_pod_and_static_membership(full_docs: list[Doc]) -> None:
    sts = find(full_docs, "StatefulSet")
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert "data" not in {v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]}
    headless = find(full_docs, "Service", "-headless")
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"]
    assert headless["spec"]["clusterIP"] == "None"
    instance = env_of(container(full_docs))["RESON8_KAFKA_GROUP_INSTANCE_ID"]
    assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "replicas" not in sts["spec"]  # KEDA owns the replica count


def test_static_membership_needs_a_statefulset() -> None:
    assert "needs workload.kind=StatefulSet" in render_error("staticMembership.enabled=true")


def test_kafka_tls_files_come_from_a_read_only_secret_volume(full_docs: list[Doc]) -> None:
    worker = container(full_docs)
    mount = next(m for m in worker["volumeMounts"] if m["name"] == "kafka-tls")
    assert mount["readOnly"] is True
    volume = next(v for v in pod_spec(full_docs)["volumes"] if v["name"] == "kafka-tls")
    assert volume["secret"]["secretName"] == "kafka-client-tls"
    files = {item["key"]: item["path"] for item in volume["secret"]["items"]}
    assert files == {"ca.crt": "ca.pem", "tls.crt": "cert.pem", "tls.key": "key.pem"}
    data = settings_map(full_docs)["data"]
    for variable, name in (("CAFILE", "ca.pem"), ("CERTFILE", "cert.pem"), ("KEYFILE", "key.pem")):
        assert data[f"KAFKA_SSL_{variable}"] == f"{mount['mountPath']}/{name}"
    sasl = env_of(worker)["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert sasl == {"name": "kafka-user-reson8", "key": "password"}


def test_replicas_are_bounded_by_partitions(full_docs: list[Doc]) -> None:
    assert "workload.replicas (13) exceeds" in render_error("workload.replicas=13")
    error = render_error("autoscaling.keda.enabled=true", "autoscaling.keda.maxReplicaCount=13")
    assert "maxReplicaCount (13) exceeds kafka.partitions (12)" in error
    error = render_error("autoscaling.hpa.enabled=true", "autoscaling.hpa.maxReplicas=13")
    assert "maxReplicas (13) exceeds kafka.partitions (12)" in error
    scaled = find(full_docs, "ScaledObject")["spec"]
    partitions = int(settings_map(full_docs)["data"]["RESON8_KAFKA_PARTITIONS"])
    assert scaled["maxReplicaCount"] <= partitions


def test_hpa_and_keda_are_exclusive() -> None:
    error = render_error("autoscaling.keda.enabled=true", "autoscaling.hpa.enabled=true")
    assert "are exclusive" in error


def test_keda_scales_on_the_groups_lag(full_docs: list[Doc]) -> None:
    scaled = find(full_docs, "ScaledObject")["spec"]
    assert scaled["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "stt-reson8-kafka",
    }
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == "acme-stt"  # = config.appId = Faust group id
    assert meta["topic"] == "acme.stt.audio"
    assert meta["lagThreshold"] == "5000"
    assert meta["sasl"] == "scram_sha512"
    assert meta["tls"] == "enable"
    auth = find(full_docs, "TriggerAuthentication")["spec"]["secretTargetRef"]
    assert {ref["parameter"] for ref in auth} == {"username", "password", "ca", "cert", "key"}
    assert (
        trigger["authenticationRef"]["name"]
        == find(full_docs, "TriggerAuthentication")["metadata"]["name"]
    )


def test_hpa_alternative_scales_on_cpu(tmp: Path) -> None:
    docs = render(tmp, "autoscaling.hpa.enabled=true")
    hpa = find(docs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in find(docs, "Deployment")["spec"]
    assert not [d for d in docs if d["kind"] == "ScaledObject"]


def test_optional_resources_are_off_by_default(
    default_docs: list[Doc], full_docs: list[Doc]
) -> None:
    kinds = {d["kind"] for d in default_docs}
    assert not kinds & {"ScaledObject", "HorizontalPodAutoscaler", "ServiceMonitor", "Secret"}
    assert {"PodDisruptionBudget", "ServiceAccount", "Service", "ConfigMap"} <= kinds
    monitor = find(full_docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "http"


def hooks(doc: Doc) -> str:
    annotations: dict[str, str] = doc["metadata"].get("annotations", {})
    return annotations.get("helm.sh/hook", "")


def test_topics_job_runs_before_install_and_upgrade(full_docs: list[Doc]) -> None:
    job = find(full_docs, "Job", "-topics")
    annotations = job["metadata"]["annotations"]
    assert hooks(job) == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    assert "helm.sh/hook-weight" in annotations
    (ctr,) = job["spec"]["template"]["spec"]["containers"]
    assert ctr["args"] == [
        "topics",
        "apply",
        "--prefix=acme.",
        "--partitions=24",
        "--replication-factor=3",
        "--fix",
    ]
    env = env_of(ctr)
    assert env["KAFKA_BOOTSTRAP_SERVERS"]["value"].startswith("kafka-0.kafka:9093")
    assert env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "kafka-user-reson8"
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True


def test_topics_job_gets_an_inline_password_from_a_hook_secret(tmp: Path) -> None:
    docs = render(tmp, *SASL_INLINE)
    job = find(docs, "Job", "-topics")
    secret = find(docs, "Secret", "-topics")
    assert hooks(secret) == "pre-install,pre-upgrade"
    weight = int(secret["metadata"]["annotations"]["helm.sh/hook-weight"])
    assert weight < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    (ctr,) = job["spec"]["template"]["spec"]["containers"]
    ref = env_of(ctr)["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]


def test_helm_test_pod_checks_ready_through_the_service(default_docs: list[Doc]) -> None:
    pod = find(default_docs, "Pod", "-test-ready")
    assert hooks(pod) == "test"
    script = pod["spec"]["containers"][0]["command"][-1]
    service = find(default_docs, "Service")
    assert f"http://{service['metadata']['name']}:6066/ready" in script


# --- the Dockerfile ---------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    pairs = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def final_stage() -> Iterator[tuple[str, str]]:
    pairs = dockerfile()
    last = max(i for i, (word, _) in enumerate(pairs) if word == "FROM")
    yield from pairs[last:]


def test_hadolint_passes() -> None:
    done = run(tool("hadolint"), "--failure-threshold", "warning", "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_is_multi_stage_from_slim_python() -> None:
    froms = [rest for word, rest in dockerfile() if word == "FROM"]
    assert len(froms) >= 2
    assert all(f.startswith("python:${PYTHON_VERSION}-slim") for f in froms)
    assert ("ARG", "PYTHON_VERSION=3.11") in dockerfile()
    copies = [rest for word, rest in final_stage() if word == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"]  # no sources, no build tools


def test_dockerfile_runs_as_a_numeric_non_root_user() -> None:
    args = {}
    for word, rest in dockerfile():
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value
    users = [rest for word, rest in final_stage() if word == "USER"]
    assert users, "no USER in the final stage"
    user = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], users[-1])
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    chart_uid = 10001  # values.yaml podSecurityContext.runAsUser
    assert int(uid) == chart_uid


def test_dockerfile_entrypoint_is_the_worker() -> None:
    stage = dict(final_stage())
    assert json.loads(stage["ENTRYPOINT"]) == ["reson8-kafka"]
    assert json.loads(stage["CMD"]) == ["worker"]
    assert "HEALTHCHECK" not in stage  # Kubernetes probes /healthz and /ready


def test_dockerfile_and_context_hold_no_secrets() -> None:
    secretish = re.compile(r"(KEY|PASSWORD|TOKEN|SECRET|CREDENTIAL)", re.IGNORECASE)
    for word, rest in dockerfile():
        if word in ("ENV", "ARG", "LABEL"):
            names = re.findall(r"(\w+)=", rest) or [rest.split()[0]]
            assert not [n for n in names if secretish.search(n)], f"{word} {rest}"
        if word in ("COPY", "ADD"):
            assert ".env" not in rest
            assert "http" not in rest  # nothing fetched at build time by ADD
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*"  # allow-list: .venv, .cache, .git, tests never enter the context
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "workers", "schemas", "topology", "emulator"}
