"""The shipped deployment files, run with the real programs: nginx (TLS) in front of gunicorn instances."""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.issuer import MockIssuer
from tests.support.nginx import Nginx
from tests.support.nginx import start_nginx
from tests.support.servers import ServerProcess
from tests.support.servers import free_port
from tests.support.servers import start_gunicorn
from tests.support.tls import TLSFiles
from tests.support.tls import make_tls_files
from tests.support.token_scan import find_tokens

STATE_SECRET = "deploy-state-secret-0123456789-abcdefghijklmnop"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def app_env(issuer: MockIssuer, resource_url: str, folder: Path, **extra: str) -> dict[str, str]:
    return {
        "MCP_RESOURCE_URL": resource_url,
        "MCP_ISSUER": issuer.issuer,
        "MCP_SCOPES_SUPPORTED": "todo:read todo:write",
        "MCP_STATE_SECRET": STATE_SECRET,
        "MCP_INSTANCE_PATH": str(folder / "instance"),
        # These tests load the servers with one user's token far past any sensible per-user limit;
        # rate limits have tests of their own.
        "MCP_RATE_LIMIT": "off",
        **extra,
    }


def lines_with(text: str, read: Callable[[], str], timeout: float = 10.0) -> list[str]:
    """The log lines holding ``text``, waiting until there is one: a line not yet written cannot be checked."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in read().splitlines() if text in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def assert_no_token(log: str) -> None:
    assert find_tokens(log) == [], "a token reached a log"


@dataclass
class ProxiedDeployment:
    """nginx on https, with two gunicorn instances of two workers each behind its upstream."""

    nginx: Nginx
    instances: list[ServerProcess]
    bases: list[str]
    issuer: MockIssuer
    tls: TLSFiles

    @property
    def origin(self) -> str:
        return self.nginx.origin

    @property
    def url(self) -> str:
        return self.origin + "/mcp"

    def token(self, *scopes: str, **claims: object) -> str:
        return self.issuer.mint(str(claims.pop("aud", self.url)), scopes=scopes, **claims)  # type: ignore[arg-type]

    def logs(self) -> str:
        return self.nginx.log() + "".join(instance.log() for instance in self.instances)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def proxied(
    issuer: MockIssuer, tls_files: TLSFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxiedDeployment]:
    folder = tmp_path_factory.mktemp("proxied")
    https_port = free_port()
    resource_url = f"https://127.0.0.1:{https_port}/mcp"
    instances: list[ServerProcess] = []
    bases: list[str] = []
    nginx: Nginx | None = None
    try:
        for index in range(2):
            env = app_env(issuer, resource_url, folder, MCP_TRUSTED_PROXIES="1")
            process, base = start_gunicorn(env, folder / f"gunicorn-{index}.log", workers=2, threads=4)
            instances.append(process)
            bases.append(base)
        ports = [int(base.rsplit(":", 1)[1]) for base in bases]
        nginx = start_nginx(folder / "nginx", tls_files, ports, https_port=https_port)
        yield ProxiedDeployment(nginx, instances, bases, issuer, tls_files)
    finally:
        if nginx is not None:
            nginx.stop()
        codes = [instance.stop() for instance in instances]
    assert codes == [0] * len(instances), "".join(instance.log()[-3000:] for instance in instances)
