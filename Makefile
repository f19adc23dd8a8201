# The two commands a newcomer needs: `make run` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# Debian packages the tests run for real; installed by `make test` when missing.
SYSTEM_PACKAGES := nginx systemd

.PHONY: run test lint format install clean system-packages

$(INSTALLED): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

install: $(INSTALLED)

run: $(INSTALLED)
	@echo
	@echo "  MCP endpoint:  http://127.0.0.1:5000/mcp   (development mode: the server issues its own tokens)"
	@echo "  Get a token:   MCP_DEV=1 $(BIN)/flask --app wsgi mcp token --sub alice --scope 'todo:read todo:write todo:delete'"
	@echo "  Claude Code:   claude mcp add --transport http todo http://127.0.0.1:5000/mcp --header \"Authorization: Bearer <token>\""
	@echo "  MCP Inspector: npx @modelcontextprotocol/inspector, transport Streamable HTTP, URL above, header Authorization: Bearer <token>"
	@echo
	MCP_DEV=1 $(BIN)/flask --app wsgi run --host 127.0.0.1 --port 5000

system-packages:
	@scripts/ensure-debian-packages $(SYSTEM_PACKAGES)

test: $(INSTALLED) system-packages
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
