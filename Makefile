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
	rm -rf $(VENV) $(BENCH_VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis

# The library beside the frameworks a host would pick instead (django-fsm-2 with django-fsm-log,
# transitions, python-statemachine and sqlalchemy-fsm on ORM models), on the same workload in
# the same rounds: the peers phase. Their packages (tests/benchmarks/peers/requirements.txt) go
# into a virtualenv of their own, never into .venv, which `make test` and CI use.
BENCH_VENV := .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python
BENCH_STAMP := $(BENCH_VENV)/.installed
define BENCH_PEERS
$(BENCH_PY) -m tests.benchmarks.run --db sqlite-ram --db sqlite-disk --only peers $(BENCH_ARGS)
	.ci/with-postgres $(BENCH_PY) -m tests.benchmarks.run --db postgres --only peers $(BENCH_ARGS)
endef

# Benchmarks, on demand (docs/performance.md): SQLite on a RAM disk and on disk, then PostgreSQL
# on a throwaway server; each compares the library with the floor, interleaved. Results, tables
# and the plot go to var/bench. `make bench BENCH_ARGS=--quick` is a small smoke run.
.PHONY: bench
BENCH_ARGS ?=
bench: $(STAMP) $(BENCH_STAMP)
	$(PY) -m pip install --quiet matplotlib
	rm -f var/bench/results-*.json
	$(PY) -m tests.benchmarks.run --db sqlite-ram --db sqlite-disk $(BENCH_ARGS)
	.ci/with-postgres $(PY) -m tests.benchmarks.run --db postgres $(BENCH_ARGS)
	$(BENCH_PEERS)
	$(PY) -m tests.benchmarks.report var/bench

$(BENCH_STAMP): pyproject.toml tests/benchmarks/peers/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install --quiet --upgrade pip
	$(BENCH_PY) -m pip install --quiet -e '.[postgres]' -r tests/benchmarks/peers/requirements.txt
	touch $(BENCH_STAMP)

.PHONY: bench-peers
bench-peers: $(STAMP) $(BENCH_STAMP)
	$(BENCH_PEERS)
	$(PY) -m tests.benchmarks.report var/bench
