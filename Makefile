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

.PHONY: help serve install test lint typecheck pytest node-harness system-deps clean distclean

# make bench: freight beside its peers and the machine's limits (not part of make test).
# make bench BASELINE=<rev>: instead, freight at <rev> beside the current tree, path by path.
BENCH_ARGS ?=
BASELINE ?=
BENCH_APT := nginx-light iperf3
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
.PHONY: bench bench-s3

# make chaos: the chaos suite in full (not part of make test, which runs its short form).
.PHONY: chaos

help:
	@echo "make serve      run freight on http://$(HOST):$(PORT) with data in ./$(DATA_DIR)"
	@echo "make test       lint, format check, type check and the whole test suite"
	@echo "make lint       ruff check and ruff format --check"
	@echo "make typecheck  mypy (strict, src/freight)"
	@echo "make bench      benchmark against nginx, @tus/server, tuspyserver (~10 min; BENCH_ARGS=--large)"
	@echo "                BASELINE=<rev>: the current tree beside git revision <rev> (~4 min)"
	@echo "make bench-s3   only its S3 section: 1 GiB into SeaweedFS via freight, aiobotocore, @tus/s3-store (~5 min)"
	@echo "make chaos      kills, cut and stalled links, a full disk, 128 transfers (~2 min; root)"
	@echo "make clean      remove caches and build output (keeps .venv and $(DATA_DIR))"
	@echo "make distclean  clean, and remove .venv and tests/interop/node_modules"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# A venv whose creation failed half-way (no python3-venv, a full disk) has a python but no
# pip: make it again instead of failing on every later run.
define repair_venv
	if ! $(BIN)/python -m pip --version >/dev/null 2>&1; then
		echo "$(VENV) is incomplete: creating it again"
		rm -rf $(VENV)
		$(PYTHON) -m venv $(VENV)
	fi
endef

# Stamps: pip runs again only when pyproject.toml changes or the venv is new.
$(VENV)/.stamp-install: pyproject.toml | $(BIN)/python
	$(repair_venv)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.stamp-test: pyproject.toml | $(BIN)/python
	$(repair_venv)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.stamp-install

install: $(VENV)/.stamp-install

$(VENV)/.stamp-bench: pyproject.toml | $(BIN)/python
	$(repair_venv)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@ $(VENV)/.stamp-install

# Installs the Debian peers when missing (BASELINE needs none), then runs bench/run.py (it runs
# npm ci in bench/node).
bench: $(VENV)/.stamp-bench
	if [[ -z "$(BASELINE)" ]] && { ! command -v iperf3 >/dev/null || ! PATH="$$PATH:/usr/sbin" command -v nginx >/dev/null; }; then
		$(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			--no-install-recommends $(BENCH_APT) \
			|| echo "make bench: could not install $(BENCH_APT); those targets will be skipped"
	fi
	$(BIN)/python -m bench.run $(if $(BASELINE),--baseline '$(BASELINE)') $(BENCH_ARGS)

# make bench-s3: only the S3 section of make bench (SeaweedFS and PostgreSQL, no Debian peers).
bench-s3: $(VENV)/.stamp-bench
	$(BIN)/python -m bench.run --section s3 $(BENCH_ARGS)

chaos: $(VENV)/.stamp-test
	FREIGHT_CHAOS=full $(BIN)/python -m pytest -p no:cacheprovider -q -rxX --durations=10 \
		tests/chaos $(PYTEST_ARGS)

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

# --tb=native: pytest's own tracebacks re-parse source with ast, which Python 3.11 can get
# wrong while another thread compiles a module (SystemError, and the whole run aborts).
pytest: $(VENV)/.stamp-test node-harness
	$(BIN)/python -m pytest -p no:cacheprovider -q --tb=native --durations=15 $(PYTEST_ARGS)

# Installs the Debian packages the tests need (tools/system-deps lists them) or says which are
# missing; in CI a missing one fails the run, since the tests that need it would not run.
system-deps:
	if ! tools/system-deps install; then
		if [[ -n "$${CI:-}" ]]; then exit 1; fi
		echo "make test: continuing without them; the tests that need them will be skipped" >&2
	fi

# Every check runs even when an earlier one fails; the exit status reports them all.
test: system-deps $(VENV)/.stamp-test node-harness
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
	rm -rf $(VENV) $(INTEROP)/node_modules bench/node/node_modules bench/.scratch
