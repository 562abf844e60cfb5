# The two commands of the README: `make up` (the whole stack, serving) and `make test` (the full test suite).
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: up test install lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

up: $(STAMP)
	$(VENV)/bin/tenants up

# Lint first (ruff and the type checker, seconds), then the suite.
test: lint
	$(VENV)/bin/python scripts/run_tests.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(VENV)/bin/python bench/backup.py

clean:
	rm -rf $(VENV) .tenants .pytest_cache .hypothesis
