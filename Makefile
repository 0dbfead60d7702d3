# One command per task, the same locally and in CI.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install lint test test-unit test-integration test-e2e bench demo docs schemas schemas-check clean fuzz

$(BIN)/reson8-kafka: pyproject.toml
	bash scripts/system-deps.sh
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/reson8-kafka

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install helm-tools
	$(BIN)/pytest tests

test-unit: install
	$(BIN)/pytest tests/unit

test-integration: install helm-tools
	$(BIN)/pytest tests/integration

test-e2e: install
	$(BIN)/pytest tests/e2e

# The benchmark extra (matplotlib for the plots, py-spy for the profile) is
# installed on top of the dev install; `make bench` rewrites docs/BENCHMARKS.md.
$(BIN)/py-spy: $(BIN)/reson8-kafka
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $@

bench: install $(BIN)/py-spy
	$(BIN)/python -m bench

# Long fuzzing runs (atheris, coverage-guided) of every target in tests/fuzz;
# FUZZ_MINUTES shares the time between the targets. CI runs the same targets
# briefly with hypothesis (tests/unit/test_fuzz.py).
FUZZ_MINUTES ?= 30
$(BIN)/.fuzz: $(BIN)/reson8-kafka
	$(BIN)/pip install -q -e '.[dev,fuzz]'
	touch $@

fuzz: install $(BIN)/.fuzz
	$(BIN)/python scripts/fuzz.py run --minutes $(FUZZ_MINUTES)

demo: install
	$(BIN)/reson8-kafka demo

docs: install
	$(BIN)/python -m workers.settings > docs/configuration.md

schemas: install
	$(BIN)/python -m schemas.export docs/schemas

schemas-check: install
	$(BIN)/python -m schemas.export --check docs/schemas

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache

include scripts/helm.mk
