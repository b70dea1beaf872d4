# The two commands of the README: `make demo` and `make test`. Both create .venv on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedseg-installed
# PIP_FIND_LINKS on this kind of machine points at a CPU-only torch wheel that no torchvision
# matches; without it pip installs a matching torch + torchvision pair (see DEVELOPERS.md).
PIP := env -u PIP_FIND_LINKS $(BIN)/python -m pip

.PHONY: demo test container-test lint typecheck bench clean install

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

# The site and SuperLink containers built and run for real (tests/deployment/test_containers.py): Docker
# is needed; .ci/docker-up installs and starts it where this is a root shell with apt.
container-test: $(STAMP)
	@.ci/docker-up
	FEDSEG_CONTAINER_TESTS=1 $(BIN)/python -m pytest tests/deployment/test_containers.py -v -s -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check fedseg sites server simulations tests

typecheck: $(STAMP)
	$(BIN)/mypy fedseg

clean:
	rm -rf $(VENV) demo-runs .pytest_cache
