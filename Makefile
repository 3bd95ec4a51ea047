# The README's two commands: `make demo` and `make test`. Each sets up .venv itself (once) and reuses it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU torch that lies on CI machines' disk; `make ... CONSTRAINTS=` lets pip pick a CUDA build instead.
CONSTRAINTS ?= constraints-cpu.txt

.PHONY: demo test ui install clean-demo

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(if $(CONSTRAINTS),--constraint $(CONSTRAINTS)) --editable ".[test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/kb-assets demo run

test: $(VENV)/.installed
	$(BIN)/ruff check kb_assets kb_assets_tests
	# One worker per core: much of the suite is single-threaded Python (Dagster runs, parsers). loadscope keeps each
	# module on one worker, so its module-scoped fixtures are built once. `.venv/bin/pytest` alone runs serially.
	$(BIN)/python -m pytest -n auto --dist loadscope

# The demo recipe's UI on its own run history (data/warehouse/demo/dagster/); Ctrl-C stops every process it started.
ui: $(VENV)/.installed
	$(BIN)/kb-assets ui

clean-demo:
	rm -rf data/demo/genome data/demo/annotation data/demo/cohort data/demo/checkpoint data/warehouse/demo
