# Two commands, each doing all set-up from a fresh clone:
#   make demo   - the main job: FSPO training with verl's real V1 trainer on CPU (tiny local model)
#   make test   - the test suite (CPU only; real verl, Ray, Hydra and TransferQueue)
#
# Set-up: a virtualenv in $(VENV); torch==2.13.0 first (on CPU machines this is the CPU wheel; an unpinned
# torch would pull several GB of CUDA packages), then this package with its test extra.

VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# .ci/run runs the same command (pytest called directly, so that CI exits with pytest's code). Two xdist workers:
# one runs the trainer and cluster tests (tests/e2e, tests/cluster) one after the other, the other the in-process
# tests beside them (tests/conftest.py: TrainerRunsOnOneWorker)
PYTEST_CMD = $(PY) -m pytest -n 2 --durations=10

.PHONY: setup test demo clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[test]"
	touch $@

test: setup
	$(PYTEST_CMD) $(PYTEST_ARGS)

# The CPU demo: FSPO on the countdown task with a tiny local model and verl's real V1 trainer (40 steps;
# about 3 min on an otherwise idle 2-core machine with a warm asset cache, median step ~3 s; see docs/cpu-demo.md).
# Run it again to resume from its last checkpoint. DEMO_ARGS takes any override, e.g. algorithm=sspo.
DEMO_ARGS ?=
demo: setup
	$(VENV)/bin/fspo-verl train $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
