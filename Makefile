# `make demo`: set up, bring the demo lab up, measure, print verdicts and the score, tear down.
# `make test`: set up, run every test (unit, lab, docker). Both need root on Debian 12 / Ubuntu 24.04.
# scripts/setup.sh installs the project into the virtual environment .venv (the system python3 is
# externally managed, PEP 668), so every target runs that venv's python.
VENV ?= .venv
PY ?= $(VENV)/bin/python
# Lab tests mostly wait on timeouts and on other processes, so more workers than cores pay off;
# tests that share state are grouped (xdist_group) and run on one worker.
TEST_WORKERS ?= 4
PYTEST_ARGS ?=

.PHONY: setup demo test unit lint bench clean

setup:
	./scripts/setup.sh

demo: setup
	$(PY) -m harness run scenarios/demo.yaml --check

test: setup
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup --durations=15 $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest -q tests/unit

lint:
	$(PY) -m ruff check .

bench: setup
	$(PY) bench/run.py

clean:
	$(PY) -m harness down --all
