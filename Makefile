# The README's commands. Each installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: the daemon in the foreground, on an embedded Redis unless [redis] url is set
run: $(STAMP)
	$(BIN)/recoveryd run -c recoveryd.toml

## test: the whole test suite (starts its own redis-server, SMTP and HTTP servers)
test: $(STAMP)
	$(BIN)/python -m pytest

## lint: formatting, lint and types
lint: $(STAMP)
	$(BIN)/ruff format --check recoveryd tests
	$(BIN)/ruff check recoveryd tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .venv-bench state .pytest_cache .mypy_cache .ruff_cache

## bench: the benchmark suite beside arq and RQ (BENCH_ARGS=--tiny: CI's size)
# In a virtualenv of its own: arq pins an older redis-py than recoveryd's.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_DEPS := arq==0.28.0 rq==3.0.0 py-spy==0.4.3

$(BENCH_STAMP): pyproject.toml
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e . $(BENCH_DEPS)
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	mkdir -p state
	$(BENCH_VENV)/bin/python -m bench --json state/bench-results.json $(BENCH_ARGS)
