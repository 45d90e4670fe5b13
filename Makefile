# The two commands of the README's quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck unit bench bench-corpus clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when the project's metadata changes. The demo needs the package only; the
# tests need their tools too.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-run

# Flags for the demo, e.g. when port 9958 is taken:
#   make demo DEMO_ARGS='--web.listen-address 127.0.0.1:9959'
DEMO_ARGS ?=

demo: $(VENV)/.installed-run
	$(BIN)/modelarts-exporter demo $(DEMO_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check exporter tests bench
	$(BIN)/ruff format --check exporter tests bench

typecheck: $(VENV)/.installed
	$(BIN)/mypy --strict exporter

unit: $(VENV)/.installed
	$(BIN)/python -m pytest

test: lint typecheck unit

bench: $(VENV)/.installed
	$(BIN)/python bench/rules_throughput.py
	$(BIN)/python bench/cursor_unchanged.py
	$(BIN)/python bench/analyze_floor.py
	$(BIN)/python bench/scale.py

# The shipped rules against a labelled corpus of real logs: make bench-corpus CORPUS=dir
bench-corpus: $(VENV)/.installed
	$(BIN)/python bench/corpus_eval.py $(CORPUS)

clean:
	rm -rf $(VENV) build dist .mypy_cache .pytest_cache .ruff_cache .hypothesis
