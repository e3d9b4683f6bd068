# Two commands matter: `make demo` (the whole pipeline on local servers) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK := bash scripts/stack.sh
# Every target that talks to servers loads the stack's environment first.
WITH_ENV := eval "$$($(STACK) env)" &&

.PHONY: help venv stack-up stack-down stack-status stack-env demo test test-unit lint bench bench-quick reliability soak fault-soak demo-peak container-check clean

help:
	@echo "make demo      run the whole pipeline end to end on local servers"
	@echo "make test      unit and integration tests (starts the local stack)"
	@echo "make stack-up | stack-down | stack-status | stack-env"
	@echo "make lint | bench | bench-quick | reliability | soak MINUTES=30 | fault-soak MINUTES=60 | demo-peak"
	@echo "make container-check  the image and docker-compose.yml built and run for real (root)"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[service,dev,bench]"
	touch $@

venv: $(VENV)/.installed

# moto's server (the stack's S3) runs from the venv.
stack-up: venv
	$(STACK) up

stack-down:
	$(STACK) down

stack-status:
	$(STACK) status

stack-env:
	@$(STACK) env

demo: venv stack-up
	$(WITH_ENV) $(PY) -m scripts.demo

# Four tests at a time: most wait on the servers, not on the two cores.
TEST_WORKERS ?= 4

test: venv stack-up
	$(WITH_ENV) $(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) tests

test-unit: venv
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) -m "not stack" tests

# The backfill acceptance run at full size (make test runs the same test at 20,000 lines).
.PHONY: backfill-check
backfill-check: venv stack-up
	$(WITH_ENV) BACKFILL_CHECK_LINES=200000 $(PY) -m pytest -q -p no:cacheprovider tests/integration/test_backfill_stack.py

bench: venv stack-up
	$(WITH_ENV) $(PY) -m bench.run

bench-quick: venv stack-up
	$(WITH_ENV) $(PY) -m bench.run --quick

MINUTES ?= 30
SOAK_MINUTES ?= 2

# Faults, bad input, fuzzing, security at full size, then a short soak: one JSON line.
reliability: venv stack-up
	$(WITH_ENV) $(PY) -m scripts.reliability --soak-minutes $(SOAK_MINUTES)

soak: venv stack-up
	$(WITH_ENV) $(PY) -m scripts.soak --minutes $(MINUTES)

# Two consumers at 80% of a shared ceiling, a fault every 5 minutes (kill, MongoDB paused,
# SQS down): one JSON line; run on a quiet machine, outside CI.
fault-soak: venv stack-up
	$(WITH_ENV) $(PY) -m scripts.fault_soak --minutes $(MINUTES)

# Peak shaving: a burst at 5x the ceiling into SQS, MongoDB sees the ceiling; draws docs/peak-shaving.png.
demo-peak: venv stack-up
	$(WITH_ENV) $(PY) -m scripts.demo_peak
	$(WITH_ENV) $(PY) -m scripts.demo_peak --adaptive --ceiling 4000 --burst-factor 2

# The consumer image and the compose stack, built and run (installs and starts a Docker
# engine when none runs; the local stack when none answers). Prints its figures at the end.
container-check: venv
	bash scripts/container_check.sh

lint: venv
	$(VENV)/bin/ruff check producer ingest tests bench scripts
	$(VENV)/bin/ruff format --check producer ingest tests bench scripts
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
