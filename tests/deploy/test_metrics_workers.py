"""/metrics under gunicorn with two workers: every worker counts, whichever one is scraped.

gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before the app is imported, so
prometheus_client writes each worker's samples to files there and a scrape
adds them all up; counts of a worker that died stay counted.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.conftest import app_env
from tests.deploy.conftest import assert_no_token
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import call_tool
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers
from tests.support.load import children
from tests.support.load import wait_for
from tests.support.servers import ServerProcess
from tests.support.servers import free_port
from tests.support.servers import start_gunicorn

pytestmark = pytest.mark.e2e
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base: str) -> Samples:
    # A new connection per scrape: either worker may answer.
    response = httpx2.get(base + "/metrics", headers={"Connection": "close"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=1.0.0; charset=utf-8"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def server(issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    folder: Path = tmp_path_factory.mktemp("metrics")
    port = free_port()
    env = app_env(issuer, f"http://127.0.0.1:{port}/mcp", folder)
    process, base = start_gunicorn(env, folder / "gunicorn.log", port=port, workers=2, threads=4)
    yield process, base
    assert process.stop() == 0, process.log()
    assert_no_token(process.log())


def test_counters_add_up_across_both_workers(issuer: MockIssuer, server: tuple[ServerProcess, str]) -> None:
    process, base = server
    url = base + "/mcp"
    assert wait_for(lambda: len(children(process.pid)) == 2, 30)
    before = scrape(base)
    # Both workers loaded the keys once at start: one fetch each, both counted.
    assert value(before, "mcp_jwks_fetches_total", outcome="ok") == 2
    token = issuer.mint(url, scopes=["todo:read"])
    for number in range(20):
        headers, body = call_tool("greet_user", {"name": str(number)}, token=token)
        response = httpx2.post(url, headers={**headers, "Connection": "close"}, content=body)
        assert response.status_code == 200
    for _ in range(3):
        response = httpx2.post(url, headers=request_headers("tools/list"), json=request_body("tools/list"))
        assert response.status_code == 401
    headers, body = call_tool("add_todo", {"title": "x"}, token=token)
    assert httpx2.post(url, headers=headers, content=body).status_code == 403
    served = re.findall(r'<(\d+)> "POST /mcp ', process.log())
    assert len(set(served)) == 2, "both workers must have served calls for this test to mean anything"

    # The scraped worker writes its own counts; the other one's reach the files within a second (app.metrics.Tallies).
    after = scrape(base)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
        grew("mcp_tool_call_duration_seconds_count", tool="greet_user") < 20
        or grew("mcp_requests_total", method="tools/call", tool="add_todo", status="403") < 1
    ):
        time.sleep(0.2)
        after = scrape(base)

    assert grew("mcp_requests_total", method="tools/call", tool="greet_user", status="200") == 20
    assert grew("mcp_requests_total", method="-", tool="-", status="401") == 3
    assert grew("mcp_requests_total", method="tools/call", tool="add_todo", status="403") == 1
    assert grew("mcp_auth_failures_total", reason="no_token") == 3
    assert grew("mcp_auth_failures_total", reason="insufficient_scope") == 1
    assert grew("mcp_tool_call_duration_seconds_count", tool="greet_user") == 20
    assert grew("mcp_tool_call_duration_seconds_bucket", tool="greet_user", le="+Inf") == 20
    assert grew("mcp_jwks_fetches_total", outcome="ok") == 0


def test_a_dead_workers_counts_stay_counted(issuer: MockIssuer, server: tuple[ServerProcess, str]) -> None:
    process, base = server
    before = scrape(base)
    calls = value(before, "mcp_requests_total", method="tools/call", tool="greet_user", status="200")
    assert calls >= 20
    workers = children(process.pid)
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: len(children(process.pid) - workers) == 1 and len(children(process.pid)) == 2, 30)
    after = scrape(base)
    assert value(after, "mcp_requests_total", method="tools/call", tool="greet_user", status="200") == calls
    # The replacement fetched the keys at start, like every worker.
    assert (
        value(after, "mcp_jwks_fetches_total", outcome="ok")
        == value(before, "mcp_jwks_fetches_total", outcome="ok") + 1
    )
