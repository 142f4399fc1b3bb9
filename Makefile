# The project's entry points: `make demo`, `make test`, `make up`, `make bi`, `make bench`, `make gcs-demo`.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
VENV := .venv
BIN := $(VENV)/bin
BI_VENV := .venv-bi
SAMPLE := data/sample
# uv at the pinned version, installed when missing
ENSURE_UV = @$(PYTHON) -m uv --version 2>/dev/null | grep -q "$(UV_VERSION)" || $(PYTHON) -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"

.PHONY: setup system demo gcs-demo lint test test-fast up bi bench clean-data

# Spark's jars (Delta) are resolved once into .jars/; sessions then start from local files.
setup: system $(VENV)/.synced
	@$(BIN)/python -m lakehouse.jars

system:
	@bash scripts/system-deps.sh

# Bytecode is compiled at install: where PYTHONDONTWRITEBYTECODE is set, every process (CLI, Prefect server and
# worker, Spark's Python workers) would otherwise recompile prefect, pandas and pyspark on import (2x slower starts).
$(VENV)/.synced: pyproject.toml uv.lock
	$(ENSURE_UV)
	$(PYTHON) -m uv sync --frozen --all-groups --quiet --compile-bytecode
	@touch $@

$(SAMPLE)/.complete: | setup
	$(BIN)/lakehouse generate --out $(SAMPLE)
	@touch $@

demo: setup $(SAMPLE)/.complete
	$(BIN)/lakehouse run
	$(BIN)/lakehouse summary

# The cloud path on one machine: a GCS emulator, the same sample as `make demo` in a bucket, source and lake on gs://.
gcs-demo: setup $(SAMPLE)/.complete
	@bash scripts/gcs-emulator.sh
	@$(BIN)/python -m lakehouse.jars --gcs
	$(BIN)/python scripts/gcs_demo.py $(SAMPLE) data/gcs-demo

# Linters over the whole tree: ruff (lint and format), mypy (settings in pyproject.toml), sqlfluff on the SQL, and
# docs/lake-tables.md against the catalogue it is generated from.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/sqlfluff lint warehouse_sql/
	$(BIN)/python -m lakehouse.dictionary --check

# The whole suite, end-to-end tests included, after the linters; CI runs exactly this. Two workers, a test module
# each at a time: much of a test's time is spent waiting on subprocesses, servers and JVM starts.
test: lint
	@bash scripts/system-deps.sh --test
	@bash scripts/gcs-emulator.sh
	@$(BIN)/python -m lakehouse.jars --gcs
	$(BIN)/pytest -n 2 --dist loadfile

# The fast tier: everything but the end-to-end tests.
test-fast: setup
	@bash scripts/gcs-emulator.sh
	$(BIN)/pytest -m "not e2e"

up: setup
	$(BIN)/lakehouse up

# Apache Superset lives in its own environment (bi/pyproject.toml, bi/uv.lock): its dependencies clash with ours.
$(BI_VENV)/.synced: bi/pyproject.toml bi/uv.lock
	$(ENSURE_UV)
	UV_PROJECT_ENVIRONMENT=$(CURDIR)/$(BI_VENV) $(PYTHON) -m uv sync --project bi --frozen --quiet --compile-bytecode
	@touch $@

bi: setup $(BI_VENV)/.synced
	$(BIN)/lakehouse bi

bench: setup
	$(BIN)/python -m bench.run $(if $(EVENTS),--events $(EVENTS),)

clean-data:
	-$(BIN)/lakehouse pg remove
	rm -rf data
