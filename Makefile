# The README's two commands; each first sets up whatever is missing, so a fresh machine needs no other:
#   make run     the main job: `silkie run` on the mini world (flags through ARGS, e.g. ARGS="--rounds 2")
#   make test    the tests (arguments through PYTEST_ARGS or ARGS, e.g. PYTEST_ARGS=tests/test_schema.py)
#   make lint    ruff and the import layers (lint-imports), as CI runs them
#   make setup   the set-up alone
# The environment is the activated one (VIRTUAL_ENV) if any, else .venv, made with $(PYTHON)
# (PYTHON=python3.11 picks another; it only matters when .venv is made). Set-up is skipped when done:
# the package is reinstalled only when setup.cfg or pyproject.toml changed (the install is editable,
# so edits to the code need none).

PYTHON ?= python3
VENV ?= $(or $(VIRTUAL_ENV),.venv)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.silkie-installed
# Pinned and installed first: a bare `torch` would take the newest release, not the one on this disk.
TORCH := torch==2.14.1 torchvision==0.29.1
ARGS ?=
PYTEST_ARGS ?= $(ARGS)

.PHONY: run test lint setup

run: $(STAMP)
	$(VENV)/bin/silkie run $(ARGS)

# pytest exits 5 when it collected nothing (a mistyped path or -k): a failure, said in words.
test: $(STAMP)
	@$(PY) -m pytest -q $(PYTEST_ARGS); status=$$?; \
	    if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$status

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

setup: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

# torch is installed only where none is importable: a CUDA build already in the environment stays,
# and the constraint file pins it so that resolving the package's dependencies cannot replace it
# (pip stops with the conflict instead).
$(STAMP): setup.cfg pyproject.toml | $(PY)
	@if $(PY) -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)'; then \
	    echo "keeping the torch already in $(VENV)"; \
	else \
	    echo "$(PY) -m pip install $(TORCH)"; $(PY) -m pip install $(TORCH); \
	fi
	$(PY) -c 'from importlib.metadata import version; print("torch==" + version("torch"))' > $(VENV)/.silkie-torch
	$(PY) -m pip install -e ".[dev]" -c $(VENV)/.silkie-torch
	@touch $@
