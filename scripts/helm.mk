# Chart and image checks; included by the Makefile (`include scripts/helm.mk`).
# Tools and offline Kubernetes schemas go to .cache (removed by `make clean`).
.PHONY: helm-tools helm-check dashboard

# helm, kubeconform, hadolint, promtool, monitoring-lint into .cache/bin, schemas into
# .cache/k8s-schemas; a no-op (~0.1 s) when they are there. Cold: a few minutes of Go builds.
helm-tools:
	bash scripts/helm-tools.sh >/dev/null

# helm lint --strict, kubeconform -strict, chart assertions, hadolint; the dashboard,
# the alerts and the ServiceMonitor (PromQL parsed, alert rules unit-tested by promtool).
helm-check: install helm-tools
	$(BIN)/pytest tests/integration/test_helm.py tests/integration/test_helm_monitoring.py tests/integration/test_helm_alerts.py

# Rewrite helm/reson8-kafka/dashboards/reson8-kafka.json from scripts/dashboard.py.
dashboard: install
	$(BIN)/python scripts/dashboard.py
