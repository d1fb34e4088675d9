# Two commands on a fresh machine: `make dev` and `make test`. HOST and PORT are honoured.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
# The MCP Inspector CLI and the Node 22 it runs on, pinned by the lock file, for tests/e2e/test_inspector.py.
INSPECTOR_DIR := tests/e2e/inspector
INSPECTOR_STAMP := $(INSPECTOR_DIR)/node_modules/.installed-$(shell cksum < $(INSPECTOR_DIR)/package-lock.json | cut -d' ' -f1)
# panva's oidc-provider and the same Node 22, pinned by the lock file: the real IdP of the tests/e2e oidc-provider tests.
OIDC_PROVIDER_DIR := tests/e2e/oidc_provider
OIDC_PROVIDER_STAMP := $(OIDC_PROVIDER_DIR)/node_modules/.installed-$(shell cksum < $(OIDC_PROVIDER_DIR)/package-lock.json | cut -d' ' -f1)

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

$(OIDC_PROVIDER_STAMP): $(OIDC_PROVIDER_DIR)/package.json $(OIDC_PROVIDER_DIR)/package-lock.json
	cd $(OIDC_PROVIDER_DIR) && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $(OIDC_PROVIDER_STAMP)

dev: $(STAMP)
	$(if $(HOST),HOST=$(HOST)) $(if $(PORT),PORT=$(PORT)) $(BIN)/python server.py --dev

run: $(STAMP)
	$(BIN)/python server.py

# The M2M client against `make dev` (or whatever OAUTH_*/MCP_SERVER_URL say): make client ARGS="call get_me"
client: $(STAMP)
	$(BIN)/python -m client $(ARGS)

test: $(STAMP) $(INSPECTOR_STAMP) $(OIDC_PROVIDER_STAMP)
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

# requirements.lock: every runtime package (transitive ones too) with the sha256 of each of its files, for
# Python 3.11 on Linux x86_64 and aarch64, written by uv in a throwaway venv (never in .venv). Pins already in
# the lock are kept; only what requirements.txt changed moves. `make lock LOCK_ARGS=--upgrade` re-resolves all.
# It then proves the lock: it installs with --require-hashes --no-deps and passes pip check here, and pip
# downloads every aarch64 wheel against the hashes.
UV_VERSION := 0.13.9
LOCK_VENV := $(VENV)-lock
LOCK_ARGS ?=
LOCK_COMPILE = $(LOCK_VENV)/bin/uv pip compile requirements.txt --no-config --generate-hashes --python-version 3.11 \
	--custom-compile-command "make lock" --quiet $(LOCK_ARGS)

lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	cp requirements.lock $(LOCK_VENV)/x86_64.lock
	cp requirements.lock $(LOCK_VENV)/aarch64.lock
	$(LOCK_COMPILE) --python-platform x86_64-manylinux_2_28 -o $(LOCK_VENV)/x86_64.lock
	$(LOCK_COMPILE) --python-platform aarch64-manylinux_2_28 -o $(LOCK_VENV)/aarch64.lock
	@cmp -s $(LOCK_VENV)/x86_64.lock $(LOCK_VENV)/aarch64.lock \
		|| { diff $(LOCK_VENV)/x86_64.lock $(LOCK_VENV)/aarch64.lock; echo "x86_64 and aarch64 resolve differently"; exit 1; }
	$(MAKE) --no-print-directory lock-verify LOCK_FILE=$(LOCK_VENV)/x86_64.lock
	mv $(LOCK_VENV)/x86_64.lock requirements.lock
	rm -rf $(LOCK_VENV)

# The lock installs on its own (hashes, no resolver) and is complete; the aarch64 wheels match their hashes too.
LOCK_FILE ?= requirements.lock
.PHONY: lock-verify
lock-verify:
	rm -rf $(LOCK_VENV)-verify
	$(PYTHON) -m venv $(LOCK_VENV)-verify
	$(LOCK_VENV)-verify/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r $(LOCK_FILE)
	$(LOCK_VENV)-verify/bin/python -m pip check
	$(LOCK_VENV)-verify/bin/python -m pip download --quiet --disable-pip-version-check --require-hashes --no-deps \
		--only-binary=:all: --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
		--python-version 3.11 --implementation cp \
		-d $(LOCK_VENV)-verify/aarch64 -r $(LOCK_FILE)
	rm -rf $(LOCK_VENV)-verify

image:
	docker build -t mcp-oauth-resource-server:local .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache $(INSPECTOR_DIR)/node_modules $(OIDC_PROVIDER_DIR)/node_modules
