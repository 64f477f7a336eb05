# The two commands: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
UV     := $(BIN)/uv
# Every version and file hash `make install` (and the Dockerfile) takes; `make lock` writes it.
LOCK   := requirements.lock

.PHONY: install browser demo test test-db bench bench-quick lint lock format ui clean

# uv reads neither pip's config files nor its PIP_* variables: this prints pip's index (a mirror,
# from pip.conf or PIP_INDEX_URL) and CA bundle (our machines reach PyPI through a proxy whose
# certificate only that bundle trusts) as uv's variables, so both installers use the same
# registry; a variable already set wins. Not pip's extra indexes and find-links: here they are
# file:// folders with a few releases of some packages (pandas 3.0.6 and 2.3.3, not the locked
# 3.1.1), and with them `make lock` wrote hash lists that depend on the machine.
define PIP_INDEX_FOR_UV
import os, shlex
from pip._internal.commands import create_command

options, _ = create_command("install").parse_args([])
env = {"SSL_CERT_FILE": options.cert or ""}
if options.index_url != "https://pypi.org/simple":
    env["UV_DEFAULT_INDEX"] = options.index_url
for name, value in env.items():
    if value and name not in os.environ:
        print(f"export {name}={shlex.quote(value)}")
endef
export PIP_INDEX_FOR_UV
WITH_PIP_INDEX = eval "$$($(BIN)/python -c "$$PIP_INDEX_FOR_UV")" &&

# uv itself: the version and hashes the lock pins (it is a dev dependency), installed by pip.
$(UV):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	awk '/^uv==/ { on = 1; print; next } on && /^ +--hash=/ { print; next } { on = 0 }' \
		$(LOCK) > $(VENV)/uv-requirement.txt
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r $(VENV)/uv-requirement.txt

# .venv becomes exactly the lock (--exact removes what it does not list; pip, setuptools and uv
# are in it), every file checked against the lock's hashes. Python writes each module's bytecode
# on its first import; where PYTHONDONTWRITEBYTECODE stops that, every import would compile
# again, so it is written here (as pip always did, for all of site-packages: most of its time).
$(STAMP): pyproject.toml emulator/pyproject.toml $(LOCK) | $(UV)
	$(WITH_PIP_INDEX) $(UV) pip install --quiet --python $(BIN)/python --exact --strict \
		$(if $(PYTHONDONTWRITEBYTECODE),--compile-bytecode) -c $(LOCK) -e ./emulator -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## Debian's Chromium for the browser tests (Playwright drives it: no browser is downloaded).
browser:
	.ci/install-browser

## Full materialisation on embedded defaults (embedded PostgreSQL + bundled Graph API emulator).
demo: $(STAMP)
	$(BIN)/crm-pipeline demo

## Whole test suite (embedded PostgreSQL, or CRM_TEST_DATABASE_URL when set).
test: $(STAMP) browser
	$(BIN)/python -m pytest

## Only the PostgreSQL tests (used by .ci/run against the machine's PostgreSQL 15).
test-db: $(STAMP) browser
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

## Rewrite requirements.lock from the ranges in pyproject.toml (and the emulator's), with every
## file's hash. One lock for every machine: Linux, macOS and Windows, Python 3.11 to 3.13 (a
## package that differs says so in a marker). Pins that still fit are kept;
## `make lock LOCK_ARGS=--upgrade` (or `--upgrade-package NAME`) moves them.
lock: | $(UV)
	$(WITH_PIP_INDEX) $(UV) pip compile --quiet --extra dev --generate-hashes --universal \
		--python-version 3.11 --custom-compile-command "make lock" \
		$(LOCK_ARGS) --output-file $(LOCK) pyproject.toml emulator/pyproject.toml

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
