# nscodec — two commands for a fresh machine (see README):
#   make demo   — the main job end to end (procedural scene → train on CPU → .nsc → decode → PSNR + bytes)
#   make test   — the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test setup bench clean

$(BIN)/nscodec: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,bench,cluster]"
	@touch $(BIN)/nscodec

setup: $(BIN)/nscodec

demo: setup
	$(BIN)/nscodec demo --workdir outputs/demo

test: setup
	$(BIN)/python -m pytest -q tests

bench: setup
	$(BIN)/python bench/tensorf_vs_stock.py --seconds 600

clean:
	rm -rf outputs bench/runs
