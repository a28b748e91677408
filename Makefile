# One command to run the service, one to test it. Everything installs from the committed locks.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
export PORT

.PHONY: run test lint format lock console clean bench reset console-if-npm

$(VENV)/.run: requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	touch $@

$(VENV)/.dev: $(VENV)/.run requirements-dev.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.lock
	touch $@

## run: web + worker + scheduler on PORT (SQLite and local Redis unless configured)
run: $(VENV)/.run
	$(MAKE) --no-print-directory console-if-npm
	exec bash scripts/run.sh

## test: the whole suite against real PostgreSQL and Redis (and the console's own tests), in
## TEST_WORKERS lanes at once (tests/conftest.py); TEST_WORKERS=0 runs it in one process
TEST_WORKERS ?= 3
PYTEST_LANES := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS))
test: $(VENV)/.dev
	$(MAKE) --no-print-directory console-if-npm
	@if [ -d console/node_modules ]; then cd console && npm test --silent; fi
	$(BIN)/pytest $(PYTEST_LANES)

## lint: ruff
lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## lock: re-resolve requirements*.lock from pyproject.toml (needs uv)
lock:
	uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes -q -o requirements.lock
	uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 --generate-hashes -q -o requirements-dev.lock

## bench: the benchmark of docs/benchmarks.md (about 3.5 minutes; needs wrk, PostgreSQL at
## 127.0.0.1:5432, whose database `bench` it resets, and Redis index 11, which it flushes).
## Options go in BENCH_ARGS, e.g. make bench BENCH_ARGS="--ingest-seconds 10 --load-seconds 20"
BENCH_ARGS ?=
bench: $(VENV)/.run
	@command -v wrk >/dev/null || { echo "bench: wrk not found (Debian: apt-get install wrk)" >&2; exit 1; }
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

## reset: forget what `make run` stored (the SQLite database under instance/); stop it first
reset:
	@pid_file=$${RUN_PID_FILE:-instance/run.pid}; \
	if [ -f "$$pid_file" ] && kill -0 "$$(cat "$$pid_file")" 2>/dev/null; then \
		echo "reset: 'make run' is running (pid $$(cat "$$pid_file")); stop it first" >&2; exit 1; fi
	rm -f instance/conversations.db instance/conversations.db-journal \
		instance/conversations.db-wal instance/conversations.db-shm
	@echo "reset: the next 'make run' starts with an empty database (a PostgreSQL DATABASE_URL is never touched)"

console-if-npm:
	@if [ ! -f console/package.json ]; then exit 0; \
	elif command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory console; \
	else echo "npm not found: the console at /ui/ is not built (install Node.js 20+ and npm, then 'make console')"; fi

## console: build the web console into console/dist
console: console/dist/index.html

console/dist/index.html: console/package-lock.json $(shell find console/src console/index.html console/vite.config.* -type f 2>/dev/null)
	cd console && npm ci --no-audit --no-fund --loglevel=error && npm run build
	touch $@

clean:
	rm -rf $(VENV) instance console/dist console/node_modules
