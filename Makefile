# img2caricature: two commands from a fresh clone — `make repro` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Stage commands in dvc.yaml call `python`; make it the project's interpreter.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup repro test check lint bench clean-venv

setup: $(STAMP)

# Rebuild the environment only when the pins change; an existing .venv is reused.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# DVC skips `report` when every result matches dvc.lock (a fresh clone), and the page is not a DVC output: write it then.
repro: setup
	$(BIN)/dvc repro
	$(BIN)/i2c report --if-missing

# Two workers (pytest-xdist, a test file each at a time): most tests wait on a subprocess or DVC, one core each.
test: setup
	$(BIN)/python -m pytest -q -n auto --dist loadfile --durations=15

# Pipeline checks: params validate, dvc.yaml names only existing keys, the committed dvc.lock matches the code; then
# a small-scale `dvc repro` in a temporary clone: clean `dvc status`, a no-op second repro, the metric gates of
# .ci/gates.yaml, the report in headless Chromium, and `dvc exp run -S` re-running only what reads the param.
check: setup
	$(BIN)/python .ci/check.py
	$(BIN)/python .ci/check.py smoke

lint: setup
	$(BIN)/ruff check pipeline stages tests bench
	$(BIN)/ruff format --check pipeline stages tests bench

bench: setup
	$(BIN)/python -m bench.run

clean-venv:
	rm -rf $(VENV)
