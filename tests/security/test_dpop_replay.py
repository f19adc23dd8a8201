"""DPoP proof replay (RFC 9449 section 11.1) refused across workers and instances through a real Redis.

With MCP_RATE_LIMIT_STORAGE=redis://..., the jti of every accepted proof is
kept in the same Redis the rate limits use (``SET NX EX``), so a proof copied
off the wire is refused by every worker of every instance behind the public
URL. When Redis is unreachable, each worker still refuses what it saw itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx2
import pytest

from app.auth.dpop import RedisReplayCache
from tests.support.dpop import DPoPKey
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers
from tests.support.servers import RunningServer
from tests.support.servers import free_port

PUBLIC_URL = "http://localhost/mcp"  # both instances serve it; a test reaches each on its own port
KEY = DPoPKey.generate("EC")


@pytest.fixture(scope="module")
def two_instances(two_instances_sharing: Callable[..., list[RunningServer]]) -> list[RunningServer]:
    """Two instances remembering DPoP proofs in one Redis; rate limits off."""
    return two_instances_sharing("dpop", MCP_RESOURCE_URL=PUBLIC_URL, MCP_RATE_LIMIT="off")


def call(server: RunningServer, token: str, proof: str) -> httpx2.Response:
    """A new connection each time, so consecutive calls land on either worker."""
    headers = {**request_headers("tools/list"), "Host": "localhost", "Authorization": f"DPoP {token}", "DPoP": proof}
    with httpx2.Client(timeout=30, limits=httpx2.Limits(max_keepalive_connections=0)) as http:
        return http.post(server.url, headers=headers, json=request_body("tools/list"))


@pytest.mark.e2e
def test_a_proof_is_used_once_across_every_worker_of_both_instances(
    two_instances: list[RunningServer], issuer: MockIssuer
) -> None:
    token = issuer.mint(PUBLIC_URL, sub="replayed", cnf={"jkt": KEY.jkt})
    proof = KEY.proof("POST", PUBLIC_URL, access_token=token)
    first = call(two_instances[0], token, proof)
    assert first.status_code == 200, first.text
    for server in [*two_instances, *two_instances]:  # 2 instances x 2 workers, each tried twice
        replayed = call(server, token, proof)
        assert replayed.status_code == 401
        assert replayed.json() == {
            "error": "invalid_dpop_proof",
            "error_description": "The DPoP proof was already used (jti)",
        }
    # A fresh proof from the same key is fine on either instance.
    for server in two_instances:
        assert call(server, token, KEY.proof("POST", PUBLIC_URL, access_token=token)).status_code == 200


def test_without_redis_each_worker_still_refuses_what_it_saw(caplog: pytest.LogCaptureFixture) -> None:
    cache = RedisReplayCache(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    with caplog.at_level(logging.ERROR, logger="app.auth.dpop"):
        assert cache.first_use(b"proof-1", 60)
        assert not cache.first_use(b"proof-1", 60)
        assert cache.first_use(b"proof-2", 60)
    logged = [r.getMessage() for r in caplog.records if r.name == "app.auth.dpop"]
    assert logged == ["DPoP replay cache storage failed; checking replays in this worker only"]  # once a minute


def test_redis_keeps_a_jti_for_the_window(redis_url: str) -> None:
    cache = RedisReplayCache(redis_url)
    assert cache.first_use(b"\x01" * 16, 5)
    assert not cache.first_use(b"\x01" * 16, 5)
    client = cache._client
    assert 0 < client.ttl("mcp:dpop:jti:" + "01" * 16) <= 5
