# `make demo` and `make test` are the whole setup on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow bench lint check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/meshctl demo --config examples/mesh

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/translate_bench.py
	$(BIN)/python benchmarks/push_latency_bench.py
	$(BIN)/python benchmarks/client_bench.py
	$(BIN)/python benchmarks/mtls_bench.py
	$(BIN)/python benchmarks/telemetry_bench.py
	$(BIN)/python benchmarks/ab_bench.py
	$(BIN)/python benchmarks/cold_start_bench.py

check: $(STAMP)
	$(BIN)/meshctl check examples/mesh

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV)
