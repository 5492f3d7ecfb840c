# The whole set-up is two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint typecheck unit regen clean bench bench-quick profile

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pulltrace demo

lint: $(STAMP)
	$(VENV)/bin/ruff check collector pulltrace_analysis tests bench scripts

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: lint typecheck
	$(PY) -m pytest

# Collector benchmarks, each figure beside a limit measured in the same run (~6 min;
# bench-quick: ~2 min). Not tests: they print figures and never fail on time.
bench: $(STAMP)
	$(PY) -m bench

bench-quick: $(STAMP)
	$(PY) -m bench --quick

# Where the collector's time goes (py-spy on the HTTP path and the engine + store path).
profile: $(STAMP)
	$(PY) -m bench.profile

# Regenerate the containerd gRPC stubs from collector/sources/proto.
regen: $(STAMP)
	$(PY) -m collector.sources.regen

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
