"""A real gunicorn for the hostile-input tests: rate limits off, so every input reaches the code under test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import RunningServer
from tests.support.issuer import MockIssuer
from tests.support.servers import free_port
from tests.support.servers import start_gunicorn


@pytest.fixture(scope="module")
def hardened_server(issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder: Path = tmp_path_factory.mktemp("hostile")
    port = free_port()
    env = {
        "MCP_RESOURCE_URL": f"http://127.0.0.1:{port}/mcp",
        "MCP_ISSUER": issuer.issuer,
        "MCP_STATE_SECRET": "hostile-state-secret-0123456789-abcdefghijklmn",
        "MCP_INSTANCE_PATH": str(folder / "instance"),
        "MCP_RATE_LIMIT": "off",
    }
    process, base = start_gunicorn(env, folder / "gunicorn.log", port=port, workers=2, threads=4)
    yield RunningServer(process, base, issuer)
    assert process.stop() == 0, process.log()
