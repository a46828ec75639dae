# `make demo`: set up, bring the demo lab up, measure, print verdicts and the score, tear down.
# `make test`: set up, type-check (make typecheck), run every test (unit, lab, docker).
# Both need root on Debian 12 / Ubuntu 24.04.
# scripts/setup.sh installs the project into the virtual environment .venv (the system python3 is
# externally managed, PEP 668), so every target runs that venv's python.
VENV ?= .venv
PY ?= $(VENV)/bin/python
# Five workers on two cores: lab tests mostly wait (DNS, connect and TLS timeouts, throttled
# transfers, the DNS injection window), so with three the cores were about half idle (1.06 cores
# busy on average over a fresh `make test`; four: 1.2). A warm run: four workers 483-562 s of
# pytest, five 441-447 s, the test durations summing to about the same (1903-2114 s; 2117 s);
# then, with xdist's groups working again (pytest < 9.2), five: 392-405 s (1810-1883 s). Timing
# verdicts are compared against the control measured under the same load. Tests that share state
# are grouped (xdist_group) and run on one worker.
TEST_WORKERS ?= 5
PYTEST_ARGS ?=

.PHONY: setup demo test unit lint typecheck bench clean

setup:
	./scripts/setup.sh

demo: setup
	$(PY) -m harness run scenarios/demo.yaml --check

# The lab images (fauxisp/base, then fauxisp/lab) build in the background while the first tests
# run (on a fresh Debian 12 machine: a minute alone, about two beside the tests); the Docker
# tests, handed out last, take the same build lock, then find the images cached. The build runs at
# normal priority: at the lowest (nice 19) it was starved of CPU, took six minutes, and a Docker
# test waited 42 s for it.
# mypy runs beside the tests too; its report is printed after theirs, and either failing fails.
IMAGE_LOG ?= .fauxisp/image-build.log
MYPY_LOG ?= .fauxisp/mypy.log
test: setup
	@mkdir -p $(dir $(IMAGE_LOG)) $(dir $(MYPY_LOG)); \
	echo "test: building the lab images in the background (log: $(IMAGE_LOG)); mypy beside the tests"
	@$(PY) -m harness image build --with-project > $(IMAGE_LOG) 2>&1 & images=$$!; \
	$(PY) -m mypy > $(MYPY_LOG) 2>&1 & mypy=$$!; \
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup --durations=15 \
	  $(PYTEST_ARGS); status=$$?; \
	wait $$mypy; typed=$$?; echo "test: mypy:"; cat $(MYPY_LOG); \
	wait $$images || echo "test: the image build failed (the Docker tests said why); log: $(IMAGE_LOG)"; \
	if [ $$status -eq 0 ] && [ $$typed -ne 0 ]; then status=$$typed; fi; \
	exit $$status

unit: setup
	$(PY) -m pytest -q tests/unit

lint:
	$(PY) -m ruff check .

# mypy, strict on netlab, probes and harness ([tool.mypy] in pyproject.toml).
typecheck: setup
	$(PY) -m mypy

bench: setup
	$(PY) bench/run.py

clean:
	$(PY) -m harness down --all
