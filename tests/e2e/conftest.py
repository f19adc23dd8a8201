"""One real gunicorn (2 gthread workers, the shipped gunicorn.conf.py) for the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.issuer import MockIssuer
from tests.support.servers import ServerProcess
from tests.support.servers import free_port
from tests.support.servers import start_gunicorn


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class RunningServer:
    process: ServerProcess
    base: str
    issuer: MockIssuer

    @property
    def url(self) -> str:
        return self.base + "/mcp"

    def token(self, *scopes: str, **claims: object) -> str:
        return self.issuer.mint(str(claims.pop("aud", self.url)), scopes=scopes, **claims)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def gunicorn_server(issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder: Path = tmp_path_factory.mktemp("gunicorn")
    port = free_port()
    env = {
        "MCP_RESOURCE_URL": f"http://127.0.0.1:{port}/mcp",
        "MCP_ISSUER": issuer.issuer,
        "MCP_SCOPES_SUPPORTED": "todo:read todo:write",
        "MCP_STATE_SECRET": "e2e-state-secret-0123456789-abcdefghijklmnop",
        "MCP_INSTANCE_PATH": str(folder / "instance"),
    }
    process, base = start_gunicorn(env, folder / "gunicorn.log", port=port, workers=2, threads=4)
    yield RunningServer(process, base, issuer)
    assert process.stop() == 0, process.log()
