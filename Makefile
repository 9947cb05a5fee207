# Vigil: `make demo` runs the appliance on this box, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint typecheck check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[edge,server,tui,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vigil up --dash

test: $(STAMP)
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) tests/perf/bench_broker.py $(BENCH_ARGS)
	PYTHONPATH=. $(PY) tests/perf/bench_edge.py
	PYTHONPATH=. $(PY) tests/perf/bench_gateway.py
	PYTHONPATH=. $(PY) tests/perf/bench_processors.py
	PYTHONPATH=. $(PY) tests/perf/bench_rules.py
	PYTHONPATH=. $(PY) tests/perf/bench_api.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy broker edge gateway processors tui

check: lint typecheck test

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
