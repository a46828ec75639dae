# `make demo`: set up, bring the demo lab up, measure, print verdicts and the score, tear down.
# `make test`: set up, run every test (unit, lab, docker). Both need root on Debian 12.
PY ?= python3
PYTEST_ARGS ?=

.PHONY: setup demo test unit lint bench clean

setup:
	./scripts/setup.sh

demo: setup
	$(PY) -m harness run scenarios/demo.yaml --check

test: setup
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest -q tests/unit

lint:
	$(PY) -m ruff check .

bench: setup
	$(PY) bench/run.py

clean:
	$(PY) -m harness down --all
