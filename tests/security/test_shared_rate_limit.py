"""Two gunicorn instances holding one rate limit, and one set of per-caller caps, together through a real Redis."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import httpx2
import pytest

from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers
from tests.support.servers import RunningServer

pytestmark = pytest.mark.e2e
LIST = request_body("tools/list")


@pytest.fixture(scope="module")
def two_instances(two_instances_sharing: Callable[..., list[RunningServer]]) -> list[RunningServer]:
    """Two instances counting every limit in one Redis."""
    return two_instances_sharing(
        "limited",
        # Both instances serve the same public resource; each is reached on its own port here.
        MCP_AUDIENCE="https://mcp.example.com/mcp",
        MCP_RATE_LIMIT="10/minute",
        MCP_RATE_LIMIT_FAILED_AUTH="4/minute",
        MCP_CAP_IN_FLIGHT="3",
    )


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


def test_requests_in_flight_are_counted_across_instances(
    two_instances: list[RunningServer], issuer: MockIssuer
) -> None:
    """Three long streams held through two instances (four workers) fill one caller's cap of 3 in flight."""
    token = issuer.mint("https://mcp.example.com/mcp", sub="shared-cap-user")
    other = issuer.mint("https://mcp.example.com/mcp", sub="someone-else")
    headers = request_headers("tools/call", "count_to", token=token)
    body = request_body("tools/call", {"name": "count_to", "arguments": {"n": 50}, "_meta": {"progressToken": 1}})
    events = []  # kept: dropping a response's byte iterator closes the response
    with contextlib.ExitStack() as held:
        for n in range(3):
            http = held.enter_context(httpx2.Client(timeout=30))
            stream = held.enter_context(http.stream("POST", two_instances[n % 2].url, headers=headers, json=body))
            assert stream.status_code == 200
            events.append(stream.iter_bytes())
            assert b"notifications/progress" in next(events[-1])  # the call is in flight
        for server in two_instances:
            refused = httpx2.post(server.url, headers=request_headers("tools/list", token=token), json=LIST)
            assert refused.status_code == 429
            assert refused.json()["cap"] == "in_flight"
            assert refused.headers["retry-after"] == "1"
            assert (
                httpx2.post(server.url, headers=request_headers("tools/list", token=other), json=LIST).status_code
                == 200
            )
    # The streams are closed: their places are given back in Redis, whichever worker held them.
    deadline = time.monotonic() + 10
    while True:
        response = httpx2.post(two_instances[0].url, headers=request_headers("tools/list", token=token), json=LIST)
        if response.status_code != 429 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert response.status_code == 200
