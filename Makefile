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

# The project's benchmark on 127.0.0.1: A against B, C and C+, each floor a PASS/FAIL line (docs/performance.md).
# wrk and an SDK-only venv come from bench/setup.sh. BENCH_ARGS passes options, e.g. a short run:
# BENCH_ARGS="--repeats 1 --duration 2 --startups 1 --memory-tokens 1000", or "--no-fail-on-floor".
.PHONY: bench
bench: $(STAMP)
	VENV=$(VENV) bench/setup.sh
	$(BIN)/python -m bench.run $(BENCH_ARGS)

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
