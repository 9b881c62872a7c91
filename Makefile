# clipbench: `make run` (embedded offline default) and `make test` (whole suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: run test venv lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -qq $(TORCH_PINS)
	$(BIN)/pip install --disable-pip-version-check -qq -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/python scripts/make_toy_world.py --quiet
	$(BIN)/clipbench -m experiment=toy_default

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

lint: $(STAMP)
	$(BIN)/ruff check clipbench tests scripts benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/zeroshot_vs_clip_benchmark.py

clean:
	rm -rf $(VENV) outputs multirun .cache/clipbench
