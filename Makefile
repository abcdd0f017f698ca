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

# Regenerates docs/state-machine.md and docs/state-machine.svg from the machine definition.
# The SVG needs Graphviz's `dot`: installed with apt-get when run as root, otherwise explained.
.PHONY: diagrams
diagrams: $(STAMP)
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "== installing graphviz"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq --no-install-recommends graphviz >/dev/null 2>&1 \
	      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends graphviz >/dev/null; }; \
	  else \
	    echo "Graphviz's dot is missing: install it with 'sudo apt-get install graphviz' (Debian/Ubuntu) or 'brew install graphviz' (macOS)" >&2; \
	    exit 1; \
	  fi; }
	$(PY) -m workflow.diagrams
