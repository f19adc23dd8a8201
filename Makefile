# The two commands a newcomer needs: `make run` and `make test`. Both set up .venv first.
PYTHON ?= python3
# The port of `make run` (make run PORT=8080); every URL the server advertises names it.
PORT ?= 5000
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# Debian packages the tests run for real; installed by `make test` when missing.
SYSTEM_PACKAGES := chromium nginx systemd redis-server
# Node 22 and the official MCP conformance suite, pinned by package-lock.json; kept until the lock changes.
HARNESS := tests/conformance/harness
HARNESS_INSTALLED := $(HARNESS)/node_modules/.installed

.PHONY: run test lint format install clean system-packages conformance-harness bench

$(INSTALLED): pyproject.toml examples/pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]' -e ./examples
	touch $@

install: $(INSTALLED)

run: $(INSTALLED)
	@echo
	@echo "  MCP endpoint:  http://127.0.0.1:$(PORT)/mcp   (development mode: the server is its own OAuth authorization server)"
	@echo "  In a browser:  http://127.0.0.1:$(PORT)/      (the tools, their scopes, how to connect)"
	@echo "  Claude Code:   claude mcp add --transport http flask-mcp-server http://127.0.0.1:$(PORT)/mcp   then /mcp in Claude Code to sign in"
	@echo "  MCP Inspector: npx @modelcontextprotocol/inspector, transport Streamable HTTP, the URL above, Connect"
	@echo
	MCP_DEV=1 $(BIN)/flask --app wsgi run --host 127.0.0.1 --port $(PORT)

system-packages:
	@scripts/ensure-debian-packages $(SYSTEM_PACKAGES)

# npm on the machine's older node can install it; the suite then runs on the Node 22 it brings.
$(HARNESS_INSTALLED): $(HARNESS)/package.json $(HARNESS)/package-lock.json
	cd $(HARNESS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

conformance-harness: $(HARNESS_INSTALLED)

test: $(INSTALLED) system-packages $(HARNESS_INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

# The benchmark against the SDK's native server (see README, Performance); a few minutes, results in bench/results/.
bench: $(INSTALLED)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,bench]'
	@scripts/ensure-debian-packages wrk
	$(BIN)/python -m bench.run $(BENCH_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info $(HARNESS)/node_modules
