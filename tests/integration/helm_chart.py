"""Render and check the Helm chart offline: the helpers shared by the chart's tests.

Tools come from ``.cache/bin`` and the Kubernetes schemas from
``.cache/k8s-schemas``, both made by ``bash scripts/helm-tools.sh``. A missing
tool fails the test with that instruction, never skips it. Rendered YAML is
parsed by helm itself (the converter chart ``scripts/yaml2json``), so no YAML
library is needed.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "reson8-kafka"
FULL = CHART / "ci" / "full-values.yaml"
BIN = ROOT / ".cache" / "bin"
SCHEMAS = ROOT / ".cache" / "k8s-schemas"
YAML2JSON = ROOT / "scripts" / "yaml2json"
KUBE_VERSIONS = ("1.36.3", "1.30.14")  # scripts/k8s_schemas.py builds these
INSTALL_HINT = "run `bash scripts/helm-tools.sh` (installs helm, kubeconform, hadolint, schemas)"
Doc = dict[str, Any]


def tool(name: str) -> str:
    path = BIN / name
    if not path.is_file():
        pytest.fail(f"{name} is not installed in {BIN}: {INSTALL_HINT}")
    return str(path)


def run(*cmd: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False, cwd=ROOT)


def template_cmd(sets: tuple[str, ...], values: Path | None) -> list[str]:
    """helm template; a ``json:`` item goes to --set-json (numbers that are not ints)."""
    cmd = [tool("helm"), "template", "stt", str(CHART), "--namespace", "speech"]
    cmd += ["--kube-version", KUBE_VERSIONS[0]]
    if values is not None:
        cmd += ["-f", str(values)]
    for item in sets:
        json_value = item.startswith("json:")
        cmd += ["--set-json" if json_value else "--set", item.removeprefix("json:")]
    return cmd


def render_text(*sets: str, values: Path | None = None) -> str:
    done = run(*template_cmd(sets, values))
    assert done.returncode == 0, done.stderr
    return done.stdout


def render_error(*sets: str, values: Path | None = None) -> str:
    """helm template must fail; returns its error output."""
    done = run(*template_cmd(sets, values))
    assert done.returncode != 0, f"rendered although it should fail: {sets}"
    return done.stderr


def parse(text: str, tmp: Path) -> list[Doc]:
    """Every YAML document of ``text``, parsed by helm (sigs.k8s.io/yaml)."""
    source = tmp / "rendered.yaml"
    source.write_text(text)
    done = run(tool("helm"), "template", "y", str(YAML2JSON), "--set-file", f"input={source}")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def render(tmp: Path, *sets: str, values: Path | None = None) -> list[Doc]:
    return parse(render_text(*sets, values=values), tmp)


def find(docs: list[Doc], kind: str, suffix: str = "") -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"{len(found)} {kind} named *{suffix}"
    return found[0]


def settings_map(docs: list[Doc]) -> Doc:
    """The worker's settings ConfigMap (not the dashboard's)."""
    return find(docs, "ConfigMap", "-reson8-kafka")


def pod_spec(docs: list[Doc]) -> Doc:
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    assert len(workloads) == 1
    spec: Doc = workloads[0]["spec"]["template"]["spec"]
    return spec


def container(docs: list[Doc]) -> Doc:
    (worker,) = pod_spec(docs)["containers"]
    return dict(worker)


def env_of(ctr: Doc) -> dict[str, Doc]:
    return {item["name"]: item for item in ctr.get("env", [])}


def schema_location(kube_version: str) -> str:
    """kubeconform's -schema-location for the offline folder (fails when it is missing)."""
    folder = SCHEMAS / f"v{kube_version}-standalone-strict"
    if not (folder / ".complete").is_file():
        pytest.fail(f"no offline schemas in {folder}: {INSTALL_HINT}")
    return str(SCHEMAS) + (
        "/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}"
        "/{{ .ResourceKind }}{{ .KindSuffix }}.json"
    )


def kubeconform(text: str, kube_version: str) -> Doc:
    location = schema_location(kube_version)
    done = run(
        tool("kubeconform"),
        "-strict",
        "-summary",
        "-output=json",
        f"-kubernetes-version={kube_version}",
        f"-schema-location={location}",
        "-",
        stdin=text,
    )
    report: Doc = json.loads(done.stdout)
    assert done.returncode == 0, json.dumps(report["resources"], indent=1)
    return report
