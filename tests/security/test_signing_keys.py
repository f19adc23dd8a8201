"""Signing keys against the real gunicorn: rotation without restart, an outage, and a flood of unknown kids."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers
from tests.support.servers import BIN
from tests.support.servers import ROOT
from tests.support.servers import RunningServer
from tests.support.servers import ServerProcess
from tests.support.servers import free_port
from tests.support.servers import start_app

pytestmark = pytest.mark.e2e
LIST = request_body("tools/list")
COOLDOWN = 2


@pytest.fixture
def own_issuer() -> Iterator[MockIssuer]:
    """An issuer of this test's own: rotating or downing it must not disturb other tests."""
    with MockIssuer() as mock:
        yield mock


def serve(issuer: MockIssuer, folder: Path, workers: int, **env: str) -> RunningServer:
    settings = {"MCP_RATE_LIMIT": "off", "MCP_JWKS_REFETCH_COOLDOWN": str(COOLDOWN), **env}
    return start_app(issuer, folder, workers=workers, **settings)


def status(server: RunningServer, token: str) -> int:
    return httpx2.post(
        server.url, headers=request_headers("tools/list", token=token), json=LIST, timeout=30
    ).status_code


def test_a_rotated_key_is_accepted_on_its_first_request(own_issuer: MockIssuer, tmp_path: Path) -> None:
    server = serve(own_issuer, tmp_path, workers=1)
    try:
        assert status(server, server.token()) == 200
        time.sleep(COOLDOWN + 0.5)  # the boot-time fetch is older than the cooldown now
        own_issuer.rotate()
        assert status(server, server.token(sub="after-rotation")) == 200
        assert status(server, own_issuer.mint(server.url, key=own_issuer.published[0])) == 200  # the old one too
    finally:
        server.stop()


def test_an_outage_keeps_cached_keys_working_and_shows_in_readyz(own_issuer: MockIssuer, tmp_path: Path) -> None:
    server = serve(own_issuer, tmp_path, workers=1)
    try:
        assert httpx2.get(server.base + "/readyz").json() == {"status": "ready", "signing_keys": "fresh"}
        own_issuer.down = True
        time.sleep(COOLDOWN + 0.5)
        # An unknown kid makes the worker try a refetch, which fails.
        assert status(server, own_issuer.mint(server.url, header={"kid": "rotated-away"})) == 401
        assert status(server, server.token()) == 200
        ready = httpx2.get(server.base + "/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready", "signing_keys": "stale"})
    finally:
        own_issuer.down = False
        server.stop()


def test_a_worker_that_never_had_keys_is_not_ready(own_issuer: MockIssuer, tmp_path: Path) -> None:
    own_issuer.down = True
    port = free_port()
    try:
        settings = {
            "MCP_RESOURCE_URL": f"http://127.0.0.1:{port}/mcp",
            "MCP_ISSUER": own_issuer.issuer,
            "MCP_INSTANCE_PATH": str(tmp_path / "instance"),
        }
        args = [str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}", "-w", "1"]
        process = ServerProcess([*args, "wsgi:app"], settings, tmp_path / "log", f"http://127.0.0.1:{port}/healthz")
        ready = httpx2.get(f"http://127.0.0.1:{port}/readyz")
        assert (ready.status_code, ready.json()) == (503, {"status": "unavailable", "signing_keys": "missing"})
        token = own_issuer.mint(f"http://127.0.0.1:{port}/mcp")
        refused = httpx2.post(
            f"http://127.0.0.1:{port}/mcp", headers=request_headers("tools/list", token=token), json=LIST
        )
        assert (refused.status_code, refused.headers["retry-after"]) == (503, "30")
    finally:
        own_issuer.down = False
    assert process.stop() == 0


def test_a_thousand_random_kids_cause_at_most_one_fetch_per_cooldown(own_issuer: MockIssuer, tmp_path: Path) -> None:
    server = serve(own_issuer, tmp_path, workers=2, MCP_JWKS_REFETCH_COOLDOWN="30")
    try:
        before = own_issuer.key_fetches()
        started = time.monotonic()
        with httpx2.Client(timeout=30) as http:
            for _ in range(1000):
                token = own_issuer.mint(server.url, header={"kid": uuid.uuid4().hex})
                response = http.post(server.url, headers=request_headers("tools/list", token=token), json=LIST)
                assert response.status_code == 401
        windows = int((time.monotonic() - started) // 30) + 1
        # Each of the two workers may fetch at most once per cooldown window.
        assert own_issuer.key_fetches() - before <= 2 * windows
    finally:
        server.stop()
