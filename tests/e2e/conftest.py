"""One real gunicorn (2 gthread workers, the shipped gunicorn.conf.py) for the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.issuer import MockIssuer
from tests.support.servers import RunningServer
from tests.support.servers import ServerProcess
from tests.support.servers import free_port
from tests.support.servers import start_app
from tests.support.servers import start_gunicorn


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def gunicorn_server(issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_app(issuer, tmp_path_factory.mktemp("gunicorn"), MCP_SCOPES_SUPPORTED="todo:read todo:write")
    yield server
    server.stop()


@dataclass
class DevServer:
    """gunicorn in development mode: the server is its own authorization server."""

    process: ServerProcess
    base: str
    instance_path: Path

    @property
    def url(self) -> str:
        return self.base + "/mcp"

    @property
    def issuer(self) -> str:
        return self.base + "/dev-issuer"


def start_dev_server(folder: Path, **env: str) -> DevServer:
    """gunicorn (2 workers x 4 threads) in development mode on a free port, with ``env`` added."""
    port = free_port()
    settings = {
        "MCP_DEV": "1",
        "MCP_RESOURCE_URL": f"http://127.0.0.1:{port}/mcp",
        "MCP_INSTANCE_PATH": str(folder / "instance"),
        **env,
    }
    process, base = start_gunicorn(settings, folder / "gunicorn.log", port=port, workers=2, threads=4)
    return DevServer(process, base, folder / "instance")


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    server = start_dev_server(
        tmp_path_factory.mktemp("gunicorn-dev"),
        # The resource asks for todo:read up front, so a client steps up for anything more.
        MCP_SCOPES_SUPPORTED="todo:read",
        # Short-lived access tokens, honoured exactly, so a test sees one expire and get refreshed.
        MCP_DEV_TOKEN_LIFETIME="3",
        MCP_CLOCK_LEEWAY="0",
    )
    yield server
    assert server.process.stop() == 0, server.process.log()
