# Two entry points, each doing its own set-up on a fresh machine:
#   make demo   synthetic data -> pipeline build -> train fit (both stages) -> train eval
#               (DEMO_SEED=1 make demo: another training seed; the default is 0)
#   make test   lint + the test suite (what CI runs: .ci/run)
# The virtual environment lives in .venv; torch is the CPU build pinned in requirements/cpu.txt.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= demo
DEMO_SEED ?= 0
PYTEST_ARGS ?=

.PHONY: venv test lint demo clean-demo

$(BIN)/.installed: setup.cfg requirements/cpu.txt requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/cpu.txt
	$(BIN)/pip install --quiet -c requirements/constraints.txt -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pylint --disable=all --enable=duplicate-code --min-similarity-lines=8 pipeline train benchmarks
	$(BIN)/hadolint docker/Dockerfile.cpu docker/Dockerfile.gpu

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

demo: venv
	PATH=$(abspath $(BIN)):$$PATH ./scripts/demo.sh $(DEMO) $(DEMO_SEED)

clean-demo:
	rm -rf $(DEMO)
