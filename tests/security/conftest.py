"""A real gunicorn for the hostile-input tests (rate limits off, so every input reaches the code under test),
and Debian's redis-server for the tests of state shared between instances."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator

import pytest

from tests.support.issuer import MockIssuer
from tests.support.redis import running_redis
from tests.support.servers import RunningServer
from tests.support.servers import start_app


@pytest.fixture(scope="module")
def hardened_server(issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_app(issuer, tmp_path_factory.mktemp("hostile"), MCP_RATE_LIMIT="off")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's redis-server (installed by make test) on a loopback port, no persistence, stopped by pid."""
    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="module")
def two_instances_sharing(
    issuer: MockIssuer, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., list[RunningServer]]]:
    """Start two instances that keep their shared state in one Redis, each with ``env``; stopped with the module."""
    started: list[RunningServer] = []

    def start(label: str, **env: str) -> list[RunningServer]:
        servers = [
            start_app(issuer, tmp_path_factory.mktemp(f"{label}-{number}"), MCP_RATE_LIMIT_STORAGE=redis_url, **env)
            for number in (1, 2)
        ]
        started.extend(servers)
        return servers

    yield start
    for server in started:
        server.stop()
