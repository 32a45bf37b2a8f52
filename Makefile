# `make demo` and `make test` are the whole setup on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Node's @grpc/grpc-js-xds for tests/e2e/test_node_xds.py (versions in its package-lock.json)
NODE_DIR := tests/e2e/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed

.PHONY: demo test test-slow bench lint check clean debian-tools

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# Debian packages the tests run (curl in the README's path, Node.js for the interop
# test): installed with apt-get when missing (these machines have them).
DEBIAN_TOOLS := curl:curl node:nodejs npm:npm

debian-tools:
	@for tool in $(DEBIAN_TOOLS); do \
	  command -v $${tool%%:*} >/dev/null || missing="$$missing $${tool##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing with apt-get"; \
	  apt-get update -qq && apt-get install -y -qq $$missing; fi

$(NODE_STAMP): $(NODE_DIR)/package-lock.json | debian-tools
	@command -v npm >/dev/null || { echo "npm not found: tests/e2e/test_node_xds.py needs Node.js 20+ and npm" >&2; exit 1; }
	npm ci --prefix $(NODE_DIR) --no-audit --no-fund --ignore-scripts
	touch $(NODE_STAMP)

demo: $(STAMP)
	$(BIN)/meshctl demo --config examples/mesh
	@echo "meshctl and meshlib are in .venv: 'source .venv/bin/activate', then README.md's 'Five minutes with meshlib'"

test: $(STAMP) $(NODE_STAMP) debian-tools
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

test-slow: $(STAMP) $(NODE_STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/translate_bench.py
	$(BIN)/python benchmarks/push_latency_bench.py
	$(BIN)/python benchmarks/client_bench.py
	$(BIN)/python benchmarks/mtls_bench.py
	$(BIN)/python benchmarks/telemetry_bench.py
	$(BIN)/python benchmarks/ab_bench.py
	$(BIN)/python benchmarks/cold_start_bench.py
	$(BIN)/python benchmarks/testing_bench.py
	$(BIN)/python benchmarks/control_tls_bench.py

check: $(STAMP)
	$(BIN)/meshctl check examples/mesh

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV)
