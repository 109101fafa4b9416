# skinclf: `make test` sets up .venv and runs lint + tests; `make demo` runs the main job on generated data.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test lint demo docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check src tests benchmarks

test: setup lint
	$(BIN)/python -m pytest -q

demo: setup
	bash scripts/demo.sh

# docs/settings.md is generated from the settings models and presets (a test checks it is current)
docs: setup
	$(BIN)/python -m skinclf.config > docs/settings.md.tmp && mv docs/settings.md.tmp docs/settings.md

clean:
	rm -rf $(VENV) demo .pytest_cache .ruff_cache
