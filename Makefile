# freight: `make serve` runs a local server, `make test` runs every check CI runs.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.ONESHELL:
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
DATA_DIR ?= freight-data
PYTEST_ARGS ?=

INTEROP := tests/interop
# npm ci writes node_modules/.package-lock.json: newer than the lock file means current.
NODE_STAMP := $(INTEROP)/node_modules/.package-lock.json
NPM := $(shell command -v npm 2>/dev/null)

export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help serve install test lint typecheck pytest node-harness clean distclean

help:
	@echo "make serve      run freight on http://$(HOST):$(PORT) with data in ./$(DATA_DIR)"
	@echo "make test       lint, format check, type check and the whole test suite"
	@echo "make lint       ruff check and ruff format --check"
	@echo "make typecheck  mypy (strict, src/freight)"
	@echo "make clean      remove caches and build output (keeps .venv and $(DATA_DIR))"
	@echo "make distclean  clean, and remove .venv and tests/interop/node_modules"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamps: pip runs again only when pyproject.toml changes or the venv is new.
$(VENV)/.stamp-install: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.stamp-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.stamp-install

install: $(VENV)/.stamp-install

serve: $(VENV)/.stamp-install
	exec $(BIN)/freight serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

$(NODE_STAMP): $(INTEROP)/package.json $(INTEROP)/package-lock.json
	(cd $(INTEROP) && npm ci --no-audit --no-fund --loglevel=error)
	touch $@

node-harness:
ifneq ($(NPM),)
	@$(MAKE) $(NODE_STAMP)
else
	@echo "npm not found: the tus-js-client interop tests will be skipped"
endif

lint: $(VENV)/.stamp-test
	status=0
	$(BIN)/ruff check src tests || status=1
	$(BIN)/ruff format --check src tests || status=1
	exit $$status

typecheck: $(VENV)/.stamp-test
	$(BIN)/mypy

pytest: $(VENV)/.stamp-test node-harness
	$(BIN)/python -m pytest -p no:cacheprovider -q --durations=15 $(PYTEST_ARGS)

# Every check runs even when an earlier one fails; the exit status reports them all.
test: $(VENV)/.stamp-test node-harness
	@failed=()
	$(MAKE) lint || failed+=(lint)
	$(MAKE) typecheck || failed+=(typecheck)
	$(MAKE) pytest || failed+=(pytest)
	if (( $${#failed[@]} )); then echo "make test: FAILED: $${failed[*]}" >&2; exit 1; fi
	echo "make test: all checks passed"

clean:
	rm -rf build dist src/*.egg-info test-artifacts .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(INTEROP)/node_modules
