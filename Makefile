# The two commands of the README's quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-postgres test-failover lint typecheck check diagrams graphviz bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Graphviz's `dot` draws the SVG diagrams, a real dependency: installed with apt-get when run as
# root, otherwise explained.
graphviz:
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

demo: $(STAMP)
	$(PY) -m workflow.demo

test: $(STAMP) graphviz
	$(PY) -m pytest

# The same suite on a throwaway PostgreSQL server (Debian's `postgresql` package).
test-postgres: $(STAMP) graphviz
	.ci/with-postgres $(PY) -m pytest

# A primary and its synchronous standby on this machine (tests/ha/cluster.py, Debian's
# `postgresql` package): the primary killed under load and the standby promoted, read replicas.
test-failover: $(STAMP)
	$(PY) -m pytest tests/ha

lint: $(STAMP)
	$(VENV)/bin/ruff check workflow models migrations tests
	$(VENV)/bin/ruff format --check workflow models migrations tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck test

# Regenerates docs/state-machine.md, docs/loss-report.md, docs/found-card.md and their SVGs
# from the machine definitions.
diagrams: $(STAMP) graphviz
	$(PY) -m workflow.diagrams

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Benchmarks, on demand (docs/performance.md): SQLite on a RAM disk and on disk, then PostgreSQL
# on a throwaway server; each compares the library with the floor, interleaved. Results, tables
# and the plot go to var/bench. `make bench BENCH_ARGS=--quick` is a small smoke run.
.PHONY: bench
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) -m pip install --quiet matplotlib
	rm -f var/bench/results-*.json
	$(PY) -m tests.benchmarks.run --db sqlite-ram --db sqlite-disk $(BENCH_ARGS)
	.ci/with-postgres $(PY) -m tests.benchmarks.run --db postgres $(BENCH_ARGS)
	$(PY) -m tests.benchmarks.report var/bench
