# The two commands of the quickstart: `make run` and `make test`.
# Each creates .venv on first use and reinstalls when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet

.PHONY: run test test-slow lint typecheck format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev]'
	touch $@ $(RUN_STAMP)

## run: serve the cases service on http://127.0.0.1:8000 (SQLite under ./var/, in-process bus)
run: $(RUN_STAMP)
	$(BIN)/seawall serve

## test: lint, format check, type check and the whole default test suite
test: $(DEV_STAMP) lint typecheck
	$(BIN)/pytest

## test-slow: the long chaos and load runs
test-slow: $(DEV_STAMP)
	$(BIN)/pytest -m slow

## bench: the resilience benchmark against peer libraries (figures go to docs/BENCHMARKS.md)
bench: $(DEV_STAMP)
	$(PIP) install -e '.[dev,bench]'
	$(BIN)/python bench/resilience.py

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(DEV_STAMP)
	$(BIN)/mypy --strict src tests/typing

format: $(DEV_STAMP)
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
