# The two commands of the README's quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck check test-postgres clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m workflow.demo

test: $(STAMP)
	$(PY) -m pytest

# The same suite on a throwaway PostgreSQL server (Debian's `postgresql` package).
test-postgres: $(STAMP)
	.ci/with-postgres $(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check workflow models migrations tests
	$(VENV)/bin/ruff format --check workflow models migrations tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
