"""Build kubeconform's JSON schemas offline, from pinned Go modules.

kubeconform fetches schemas from the internet at run time by default; CI here
has none. Every source below comes through the Go module proxy (checked
against the Go checksum database, like any ``go install``):

- Kubernetes: ``api/openapi-spec/swagger.json`` of the module
  ``k8s.io/kubernetes``, the OpenAPI document the API server itself serves;
- KEDA: the ScaledObject and TriggerAuthentication CRDs of
  ``github.com/kedacore/keda/v2`` (``config/crd/bases``);
- prometheus-operator: the ServiceMonitor and PrometheusRule CRDs of
  ``github.com/prometheus-operator/prometheus-operator``.

The conversion is what yannh/kubernetes-json-schema publishes
("standalone-strict"): every ``$ref`` inlined, ``additionalProperties: false``
on every object with declared properties, ``null`` allowed, int-or-string and
quantities accepted as numbers or strings. File names are kubeconform's:
``{kind}-{first label of the group}-{version}.json``. Use it as::

    kubeconform -strict -kubernetes-version 1.36.3 -schema-location "$LOCATION"

with ``LOCATION`` = ``.cache/k8s-schemas/`` + ``{{ .NormalizedKubernetesVersion }}``
+ ``-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json``.

CRD YAML is read with helm (the converter chart ``scripts/yaml2json``), so
this script needs only the Python standard library, Go and helm. A folder that
is complete (``.complete`` lists its sources) is left alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

KUBERNETES_MODULE = "k8s.io/kubernetes"
KUBERNETES_VERSIONS = ("1.36.3", "1.30.14")  # newest, and the chart's kubeVersion floor
SWAGGER = "api/openapi-spec/swagger.json"
CRDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "github.com/kedacore/keda/v2",
        "v2.21.0",
        (
            "config/crd/bases/keda.sh_scaledobjects.yaml",
            "config/crd/bases/keda.sh_triggerauthentications.yaml",
        ),
    ),
    (
        "github.com/prometheus-operator/prometheus-operator",
        "v0.85.0",
        (
            "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
            "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
        ),
    ),
)
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING: dict[str, Any] = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
NUMBER_OR_STRING: dict[str, Any] = {"oneOf": [{"type": "string"}, {"type": "number"}]}
Json = dict[str, Any]
YAML2JSON = Path(__file__).resolve().parent / "yaml2json"


def module_dir(module: str, version: str) -> Path:
    """Download ``module@version`` through the Go module proxy; return its folder."""
    with tempfile.TemporaryDirectory() as empty:  # outside any go.mod
        done = subprocess.run(
            ["go", "mod", "download", "-json", f"{module}@{version}"],
            capture_output=True,
            text=True,
            cwd=empty,
            check=False,
        )
    info = json.loads(done.stdout or "{}")
    if done.returncode != 0 or "Dir" not in info:
        sys.exit(f"k8s-schemas: cannot download {module}@{version}: {info or done.stderr}")
    return Path(info["Dir"])


def yaml_documents(helm: str, path: Path) -> list[Json]:
    """Every YAML document of ``path`` as JSON, parsed by helm (no PyYAML)."""
    done = subprocess.run(
        [helm, "template", "yaml2json", str(YAML2JSON), "--set-file", f"input={path}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"k8s-schemas: cannot read {path}: {done.stderr.strip()}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


# --- schema transformations ------------------------------------------------------------


def _nullable(schema: Json) -> None:
    kind = schema.get("type")
    if isinstance(kind, str):
        schema["type"] = [kind, "null"]


def _strict(schema: Json) -> None:
    open_object = schema.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in schema and "additionalProperties" not in schema and not open_object:
        schema["additionalProperties"] = False


def _finish(schema: Json) -> Json:
    """Apply the standalone-strict rules to one (already expanded) schema node."""
    if schema.get("format") == "int-or-string" or schema.get("x-kubernetes-int-or-string"):
        rest = {k: v for k, v in schema.items() if k not in ("type", "format")}
        return {**rest, **INT_OR_STRING}
    _strict(schema)
    _nullable(schema)
    return {k: v for k, v in schema.items() if not k.startswith("x-kubernetes-")}


class Expander:
    """Inlines the ``$ref`` of an OpenAPI v2 document (cycles become ``{}``)."""

    def __init__(self, definitions: Json) -> None:
        self.definitions = definitions
        self.memo: dict[str, Json] = {}

    def definition(self, name: str, seen: frozenset[str] = frozenset()) -> Json:
        if name == QUANTITY:
            return dict(NUMBER_OR_STRING)
        if name in seen:  # only JSONSchemaProps (CRDs) is recursive: accept anything
            return {}
        if name not in self.memo:
            self.memo[name] = self.node(self.definitions[name], seen | {name})
        return self.memo[name]

    def node(self, node: Any, seen: frozenset[str]) -> Any:
        if isinstance(node, list):
            return [self.node(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = self.definition(node["$ref"].rsplit("/", 1)[-1], seen)
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return {**target, **extra}
        out: Json = {}
        for key, value in node.items():
            if key in ("properties", "patternProperties"):
                out[key] = {name: self.node(sub, seen) for name, sub in value.items()}
            else:
                out[key] = self.node(value, seen)
        return _finish(out)


def file_name(group: str, version: str, kind: str) -> str:
    """kubeconform's file name for a kind (its ``ResourceKind`` + ``KindSuffix``)."""
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind}{suffix}.json".lower()


def _with_type_enums(schema: Json, group: str, version: str, kind: str) -> Json:
    api_version = f"{group}/{version}" if group else version
    properties = dict(schema.get("properties", {}))
    for key, value in (("apiVersion", api_version), ("kind", kind)):
        if key in properties:
            properties[key] = {**properties[key], "enum": [value]}
    return {**schema, "properties": properties}


def kubernetes_schemas(swagger: Json) -> dict[str, Json]:
    """File name -> schema, for every kind of the Kubernetes API."""
    expander = Expander(swagger["definitions"])
    files: dict[str, Json] = {}
    for name, definition in swagger["definitions"].items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            group, version, kind = gvk["group"], gvk["version"], gvk["kind"]
            schema = _with_type_enums(expander.definition(name), group, version, kind)
            files[file_name(group, version, kind)] = schema
    return files


def _crd_node(node: Any) -> Any:
    if isinstance(node, list):
        return [_crd_node(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: Json = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: _crd_node(sub) for name, sub in value.items()}
        else:
            out[key] = _crd_node(value)
    if out.pop("nullable", False):
        _nullable(out)
    return _finish(out)


def crd_schemas(crd: Json) -> dict[str, Json]:
    """File name -> schema, for every served version of one CRD."""
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    files: dict[str, Json] = {}
    for version in spec["versions"]:
        schema = _crd_node(version["schema"]["openAPIV3Schema"])
        files[file_name(group, version["name"], kind)] = _with_type_enums(
            schema, group, version["name"], kind
        )
    return files


# --- the folder ---------------------------------------------------------------------------


def _sources(kubernetes_version: str) -> list[str]:
    lines = [f"{KUBERNETES_MODULE}@v{kubernetes_version} {SWAGGER}"]
    lines += [f"{mod}@{ver} {path}" for mod, ver, paths in CRDS for path in paths]
    return lines


def build(out: Path, kubernetes_version: str, helm: str) -> int:
    """Write one version's folder; return the number of schema files."""
    folder = out / f"v{kubernetes_version}-standalone-strict"
    stamp = folder / ".complete"
    sources = "\n".join(_sources(kubernetes_version)) + "\n"
    if stamp.exists() and stamp.read_text() == sources:
        return len(list(folder.glob("*.json")))
    folder.mkdir(parents=True, exist_ok=True)
    root = module_dir(KUBERNETES_MODULE, f"v{kubernetes_version}")
    files = kubernetes_schemas(json.loads((root / SWAGGER).read_text()))
    for module, version, paths in CRDS:
        root = module_dir(module, version)
        for path in paths:
            for crd in yaml_documents(helm, root / path):
                files.update(crd_schemas(crd))
    for name, schema in files.items():
        (folder / name).write_text(json.dumps(schema, separators=(",", ":")))
    stamp.write_text(sources)
    return len(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".cache/k8s-schemas"))
    parser.add_argument("--helm", default="helm", help="helm binary (reads the CRD YAML)")
    parser.add_argument(
        "--kubernetes-version",
        action="append",
        help=f"repeatable; default {', '.join(KUBERNETES_VERSIONS)}",
    )
    args = parser.parse_args(argv)
    for version in args.kubernetes_version or KUBERNETES_VERSIONS:
        count = build(args.out, version, args.helm)
        print(f"k8s-schemas: {count} schemas for Kubernetes {version} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
