# The two commands of the README: `make demo` and `make test`. Both create .venv on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedseg-installed
# PIP_FIND_LINKS on this kind of machine points at a CPU-only torch wheel that no torchvision
# matches; without it pip installs a matching torch + torchvision pair (see DEVELOPERS.md).
PIP := env -u PIP_FIND_LINKS $(BIN)/python -m pip

.PHONY: demo test lint typecheck bench clean install

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -c requirements/constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m simulations.launch demo --fresh

# pytest exits 5 when it collects no tests (e.g. a -k filter that matches nothing): not a failure.
test: $(STAMP)
	@$(BIN)/python -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check fedseg sites server simulations tests

typecheck: $(STAMP)
	$(BIN)/mypy fedseg

clean:
	rm -rf $(VENV) demo-runs .pytest_cache
