# shipledger — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SOURCES := $(shell find shipledger schemas producers processors sinks receivers -type f \( -name '*.py' -o -name '*.avsc' -o -name '*.yaml' -o -name '*.sql' \) 2>/dev/null)
PYTEST_ARGS ?=
# Two pytest workers, a test file each at a time (module fixtures stay on one worker): an
# integration test mostly waits on its subprocesses, so two halve the suite on 2 cores.
TEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help install test-deps demo up doctor test test-unit chaos lint fmt bench bench-api bench-durable bench-gate bench-stream bench-suspects bench-import clean

help: ## Show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "shipledger needs Python 3.11+"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install when dependencies or the file set change: the strict editable install maps
# schemas/, producers/, ... into shipledger.* and only sees files present at install time.
# The local stack alone ([local]: pipeline + broker) for demo and up; everything for the rest.
$(VENV)/.installed-local: pyproject.toml $(SOURCES) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[local]' --config-settings editable_mode=strict
	@touch $@

$(VENV)/.installed: pyproject.toml $(SOURCES) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]' --config-settings editable_mode=strict
	@touch $@ $(VENV)/.installed-local

install: $(VENV)/.installed ## Create .venv and install shipledger with everything (pipeline, broker, dev tools)

# The approval tests bind to a real OpenLDAP server (tests/unit/test_identity.py starts its own
# slapd on a loopback port): Debian's slapd and ldap-utils, installed once when missing.
# Needs root (CI and the dev machines run as root); the package's own daemon is not used.
SLAPD := /usr/sbin/slapd
# The live dashboard's browser tests (tests/integration/test_dashboard_browser.py) drive
# Debian's chromium through Playwright (never a browser Playwright downloads).
CHROMIUM := /usr/bin/chromium
test-deps: ## System packages the tests need (slapd, ldap-utils, chromium), installed when missing
	@if [ ! -x $(SLAPD) ] || ! command -v ldapadd >/dev/null || [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "the tests need Debian's slapd, ldap-utils and chromium: run 'make test-deps' as root"; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get -o DPkg::Lock::Timeout=600 update -qq && \
	  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends slapd ldap-utils chromium; \
	fi

demo: $(VENV)/.installed-local ## Start the embedded stack, drive a realistic day of CI traffic, show the result
	$(BIN)/shipledger demo

up: $(VENV)/.installed-local ## Run the embedded stack (Tansu + Faust + ClickHouse sink + ingest API) until Ctrl-C
	$(BIN)/shipledger up

doctor: $(VENV)/.installed-local ## Check the install, the running stack, tokens, policy and spool; say how to fix
	$(BIN)/shipledger doctor

lint: install ## ruff, mypy strict, import layers, schema compatibility, field dictionary and OpenAPI up to date
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	# Which way imports point (docs/layout.md), on a copy of the installed layout.
	$(BIN)/python tools/lint_imports.py
	$(BIN)/shipledger schemas check
	$(BIN)/shipledger schemas docs --check
	$(BIN)/shipledger api openapi --check
	# Dockerfile, compose file and Kubernetes manifests against their schemas, offline (docs/deploy.md).
	$(BIN)/python tools/lint_deploy.py
	# From inside .venv: the repo's shipledger/ folder would shadow the mapped package.
	cd $(VENV) && bin/mypy --config-file ../pyproject.toml -p shipledger
	cd $(VENV) && bin/mypy --config-file ../pyproject.toml ../tests ../tools

fmt: install ## Format and auto-fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint test-deps ## Lint, then the whole suite (unit + integration on real Tansu and chDB)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --durations=15 $(PYTEST_ARGS)

chaos: install ## Only the chaos tests: kill -9 of up and its worker under load and during start-up, SIGSTOP of worker, broker and up; nothing acknowledged lost (SHIPLEDGER_CHAOS_SEED=N to repeat a run)
	SHIPLEDGER_CHAOS_DEPLOYMENTS=$${SHIPLEDGER_CHAOS_DEPLOYMENTS:-1200} SHIPLEDGER_CHAOS_ROUNDS=$${SHIPLEDGER_CHAOS_ROUNDS:-6} $(BIN)/pytest -m chaos -s $(PYTEST_ARGS)

test-unit: install test-deps ## Only the tests that need no broker
	$(BIN)/pytest -m 'not integration' $(PYTEST_ARGS)

bench: install ## Benchmarks on the embedded stack; results in bench/results.json and .md
	$(BIN)/shipledger bench --out bench

bench-api: install ## Only the ingest API benchmark (updates its part of bench/results.*)
	$(BIN)/shipledger bench --out bench --only api

bench-durable: install ## Only the cost of durable acknowledgement: the API with the journal off, on, fsynced
	$(BIN)/shipledger bench --out bench --only durable

bench-gate: install ## Only the pre-deploy gate's latency (POST /v1/gate; target p99 < 100 ms)
	$(BIN)/shipledger bench --out bench --only gate

bench-suspects: install ## Only an incident's suspects over 10M deployments (target p99 < 100 ms)
	$(BIN)/shipledger bench --out bench --only suspects

bench-import: install ## Only shipledger import's events/s into a fresh ledger (target >= 50,000), per-stage cost
	$(BIN)/shipledger bench --out bench --only import

bench-stream: install ## Only the live dashboard's stream: event → SSE client p50/p99 at 100 ev/s, 50 clients
	$(BIN)/shipledger bench --out bench --only stream

clean: ## Remove the venv, data dir and caches
	rm -rf $(VENV) .shipledger .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist *.egg-info
	# Faust's data dirs from before it moved under the data dir (<data-dir>/faust).
	rm -rf *.processors-data
