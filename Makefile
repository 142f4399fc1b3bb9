# The project's entry points: `make demo`, `make test`, `make up`, `make bench`.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
VENV := .venv
BIN := $(VENV)/bin
SAMPLE := data/sample

.PHONY: setup system demo test up bench clean-data

setup: system $(VENV)/.synced

system:
	@bash scripts/system-deps.sh

# Bytecode is compiled at install: where PYTHONDONTWRITEBYTECODE is set, every process (CLI, Prefect server and
# worker, Spark's Python workers) would otherwise recompile prefect, pandas and pyspark on import (2x slower starts).
$(VENV)/.synced: pyproject.toml uv.lock
	@$(PYTHON) -m uv --version 2>/dev/null | grep -q "$(UV_VERSION)" || $(PYTHON) -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"
	$(PYTHON) -m uv sync --frozen --all-groups --quiet --compile-bytecode
	@touch $@

$(SAMPLE)/.complete: | setup
	$(BIN)/lakehouse generate --out $(SAMPLE)
	@touch $@

demo: setup $(SAMPLE)/.complete
	$(BIN)/lakehouse run
	$(BIN)/lakehouse summary

# The whole suite, end-to-end tests included; CI runs exactly this.
test: setup
	@bash scripts/system-deps.sh --test
	$(BIN)/pytest

up: setup
	$(BIN)/lakehouse up

bench: setup
	$(BIN)/python -m bench.run $(if $(EVENTS),--events $(EVENTS),)

clean-data:
	-$(BIN)/lakehouse pg remove
	rm -rf data
