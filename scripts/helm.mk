# Chart and image checks; included by the Makefile (`include scripts/helm.mk`).
# Tools and offline Kubernetes schemas go to .cache (removed by `make clean`).
.PHONY: helm-tools helm-check

# helm, kubeconform, hadolint into .cache/bin, schemas into .cache/k8s-schemas;
# a no-op (~0.1 s) when they are there. Cold: a few minutes of Go builds.
helm-tools:
	bash scripts/helm-tools.sh >/dev/null

# helm lint --strict, kubeconform -strict, chart assertions, hadolint.
helm-check: install helm-tools
	$(BIN)/pytest tests/integration/test_helm.py
