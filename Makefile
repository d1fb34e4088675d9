# Two commands on a fresh machine: `make dev` and `make test`. HOST and PORT are honoured.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
# The MCP Inspector CLI and the Node 22 it runs on, pinned by the lock file, for tests/e2e/test_inspector.py.
INSPECTOR_DIR := tests/e2e/inspector
INSPECTOR_STAMP := $(INSPECTOR_DIR)/node_modules/.installed-$(shell cksum < $(INSPECTOR_DIR)/package-lock.json | cut -d' ' -f1)

.PHONY: dev run client test lint format clean lock image

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# npm ci empties node_modules first, so a stale stamp goes with it. --ignore-scripts: nothing pinned needs one.
$(INSPECTOR_STAMP): $(INSPECTOR_DIR)/package.json $(INSPECTOR_DIR)/package-lock.json
	cd $(INSPECTOR_DIR) && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $(INSPECTOR_STAMP)

dev: $(STAMP)
	$(if $(HOST),HOST=$(HOST)) $(if $(PORT),PORT=$(PORT)) $(BIN)/python server.py --dev

run: $(STAMP)
	$(BIN)/python server.py

# The M2M client against `make dev` (or whatever OAUTH_*/MCP_SERVER_URL say): make client ARGS="call get_me"
client: $(STAMP)
	$(BIN)/python -m client $(ARGS)

test: $(STAMP) $(INSPECTOR_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

# Load test on 127.0.0.1 (wrk from Debian and an SDK-only venv, installed by bench/setup.sh); about 10 to 15 minutes.
# Results in docs/performance.md; BENCH_ARGS passes options, e.g. BENCH_ARGS="--repeats 3 --memory-tokens 0".
.PHONY: bench
bench: $(STAMP)
	VENV=$(VENV) bench/setup.sh
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Instructions per tool call, A against B, counted by valgrind (no CPU-time noise); about 5 minutes.
# BENCH_ARGS passes options, e.g. BENCH_ARGS="--calls rotating" or "--warm-up one_token".
.PHONY: bench-instructions
bench-instructions: $(STAMP)
	VENV=$(VENV) bench/setup.sh
	$(BIN)/python -m bench.instructions $(BENCH_ARGS)

# Python bytecodes per tool call by function, A against B (exact counts, not time); about 10 seconds.
.PHONY: bench-opcodes
bench-opcodes: $(STAMP)
	$(BIN)/python -m bench.opcodes $(BENCH_ARGS)

# Notes traffic from many owners: 3 replicas on one PostgreSQL database against 1 replica on SQLite (about a
# minute and a half). Needs PostgreSQL: BENCH_ARGS="--database-url postgresql://postgres@host:5432/postgres".
.PHONY: bench-fleet
bench-fleet: $(STAMP)
	$(BIN)/python -m bench.fleet $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Re-pin every runtime package (transitive ones too) for the image, from requirements.txt, in a scratch venv.
lock:
	rm -rf $(VENV)-lock
	$(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	{ sed -n '1,2p' requirements.lock; $(VENV)-lock/bin/python -m pip freeze --all | grep -v -e '^pip==' -e '^setuptools==' -e '^wheel==' | LC_ALL=C sort -f; } > requirements.lock.new
	mv requirements.lock.new requirements.lock
	rm -rf $(VENV)-lock

image:
	docker build -t mcp-oauth-resource-server:local .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache $(INSPECTOR_DIR)/node_modules
