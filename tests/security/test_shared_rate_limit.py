"""Two gunicorn instances holding one rate limit together through a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest

from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers
from tests.support.servers import RunningServer
from tests.support.servers import start_app

pytestmark = pytest.mark.e2e
LIST = request_body("tools/list")


@pytest.fixture(scope="module")
def two_instances(
    issuer: MockIssuer, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[RunningServer]]:
    servers = [
        start_app(
            issuer,
            tmp_path_factory.mktemp(f"limited-{number}"),
            # Both instances serve the same public resource; each is reached on its own port here.
            MCP_AUDIENCE="https://mcp.example.com/mcp",
            MCP_RATE_LIMIT="10/minute",
            MCP_RATE_LIMIT_FAILED_AUTH="4/minute",
            MCP_RATE_LIMIT_STORAGE=redis_url,
        )
        for number in (1, 2)
    ]
    yield servers
    for server in servers:
        server.stop()


def test_one_users_limit_is_shared_by_every_worker_of_both_instances(
    two_instances: list[RunningServer], issuer: MockIssuer
) -> None:
    token = issuer.mint("https://mcp.example.com/mcp", sub="shared-limit-user")
    statuses = []
    for n in range(14):
        server = two_instances[n % 2]
        with httpx2.Client() as http:  # a new connection each time: any worker of either instance
            response = http.post(server.url, headers=request_headers("tools/list", token=token), json=LIST)
        statuses.append(response.status_code)
    assert statuses.count(200) == 10, statuses
    assert statuses.count(429) == 4, statuses
    assert statuses[:10] == [200] * 10


def test_refused_credentials_are_counted_across_instances(two_instances: list[RunningServer]) -> None:
    statuses = []
    for n in range(6):
        server = two_instances[n % 2]
        response = httpx2.post(server.url, headers=request_headers("tools/list", token=f"guess-{n}"), json=LIST)
        statuses.append(response.status_code)
    assert statuses == [401, 401, 401, 401, 429, 429]
