# skinclf: `make test` sets up .venv and runs lint + tests; `make demo` runs the main job on generated data.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# PyTorch's wheel index: empty means PyPI (its default build, with the CUDA libraries);
# `make setup-cpu` uses the CPU-only wheels instead
TORCH_INDEX ?=
CPU_TORCH_INDEX := https://download.pytorch.org/whl/cpu

.PHONY: setup setup-cpu test lint demo docs clean bench bench-quick

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# a CPU-only machine: the same pinned torch and torchvision as CPU wheels (a new .venv, or after
# `make clean`; an existing .venv is kept as it is)
setup-cpu:
	$(MAKE) setup TORCH_INDEX=$(CPU_TORCH_INDEX)

# ruff; the package layering (import-linter contracts in pyproject.toml); no block of 6+
# near-identical lines repeated in src/ (pylint's duplicate-code check, settings in pyproject.toml);
# the documentation site builds with no warning (a broken link or anchor fails)
lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports --no-cache
	$(BIN)/pylint --rcfile=pyproject.toml --disable=all --enable=duplicate-code src/skinclf
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

test: setup lint
	$(BIN)/python -m pytest -q

demo: setup
	bash scripts/demo.sh

# docs/settings.md is generated from the settings models and presets, docs/cli.md from the
# command-line app (tests check that both are current); `$(BIN)/mkdocs serve` shows the site
docs: setup
	$(BIN)/python -m skinclf.settings_docs > docs/settings.md.tmp && mv docs/settings.md.tmp docs/settings.md
	$(BIN)/python -m skinclf.cli.reference > docs/cli.md.tmp && mv docs/cli.md.tmp docs/cli.md

# benchmarks (never part of `make test`; benchmarks/README.md): every benchmark, writing JSON to
# benchmarks/results/, then the results table of benchmarks/README.md. `bench` first does
# `skinclf run` of default and paper (runs/, 30 min of training each; a finished run is not
# redone), whose predictions the quality and shift benchmarks read; `bench-quick` is speed at
# 128 px, shift, and default vs paper for 5 min each on a quarter of HAM10000
# (runs/bench-quick/). More options: BENCH_ARGS=--help
BENCH_ARGS ?=
bench: setup
	$(BIN)/python benchmarks/suite.py --train $(BENCH_ARGS)

bench-quick: setup
	$(BIN)/python benchmarks/suite.py --quick --train $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo site .pytest_cache .ruff_cache
