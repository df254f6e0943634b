# prompttap — the two commands a fresh machine needs are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run demo test lint format bench install install-dev clean test-tools

# `make run` needs the runtime only; the tests, the browser driver and the benchmark need the dev extras.
$(BIN)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(BIN)/.dev: $(BIN)/.runtime
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.runtime

install-dev: $(BIN)/.dev

## Start prompttap on the embedded ClickHouse store (./.prompttap); ARGS="--upstream URL ..."
run: install
	$(BIN)/prompttap serve $(ARGS)

## A first run without an upstream or internet: simulated LLM, sample traffic, the inspector's URLs
demo: install
	$(BIN)/prompttap demo $(ARGS)

## Lint, then the whole test suite (Debian's chromium, nodejs, curl and openssl are installed here if missing)
test: install-dev lint test-tools
	$(BIN)/pytest -q

# The tests' real clients from Debian's packages (never a tool's own browser download): headless
# Chromium, Node.js, curl, and openssl (which proves the CA's name constraints).
TEST_TOOLS := chromium:chromium node:nodejs curl:curl openssl:openssl
test-tools:
	@missing=$$(for t in $(TEST_TOOLS); do command -v $${t%%:*} >/dev/null 2>&1 || echo $${t#*:}; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian's $$missing for the tests"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Benchmark prompttap against direct, nginx, LiteLLM and a minimal aiohttp proxy
bench: install-dev
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) .prompttap .prompttap-demo .pytest_cache
