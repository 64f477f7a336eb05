# The two commands: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-db bench bench-quick lint lock format ui clean

$(STAMP): pyproject.toml emulator/pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=70.1,<81"
	# requirements.lock pins every version (`make lock` rewrites it from pyproject's ranges).
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ./emulator -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## Full materialisation on embedded defaults (embedded PostgreSQL + bundled Graph API emulator).
demo: $(STAMP)
	$(BIN)/crm-pipeline demo

## Whole test suite (embedded PostgreSQL, or CRM_TEST_DATABASE_URL when set).
test: $(STAMP)
	$(BIN)/python -m pytest

## Only the PostgreSQL tests (used by .ci/run against the machine's PostgreSQL 15).
test-db: $(STAMP)
	$(BIN)/python -m pytest -m db

## Every benchmark at full size: tables, benchmarks/results.json, docs/benchmarks.md.
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

## The same at small sizes (development; writes benchmarks/results.quick.json only).
bench-quick: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --quick

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

## Rewrite requirements.lock from the ranges in pyproject.toml (and the emulator's).
lock: $(STAMP)
	$(BIN)/pip-compile --quiet --strip-extras --extra dev --no-emit-index-url --no-emit-find-links \
		--output-file requirements.lock pyproject.toml emulator/pyproject.toml

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Dagster UI + daemon on the local instance the demo wrote its runs to. Unless FB_ACCESS_TOKEN
## is set, under a Graph API emulator process (`crm-pipeline emulator -- ...`): its ad accounts
## are the partitions, and runs started from the UI sync from it.
ui: $(STAMP)
	DAGSTER_HOME=$(CURDIR)/.crm/dagster $(if $(FB_ACCESS_TOKEN),,$(BIN)/crm-pipeline emulator --) $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean:
	rm -rf .crm cache/marketing cache/analytics cache/customers .pytest_cache
