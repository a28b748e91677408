# One command to run the service, one to test it. Everything installs from the committed locks.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
export PORT

.PHONY: run test lint format lock console clean bench

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

## test: the whole suite against real PostgreSQL and Redis (and the console's own tests)
test: $(VENV)/.dev
	$(MAKE) --no-print-directory console-if-npm
	@if [ -d console/node_modules ]; then cd console && npm test --silent; fi
	$(BIN)/pytest

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
