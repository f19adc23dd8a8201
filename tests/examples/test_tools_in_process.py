"""The example tools through the Flask app in-process: the caller reaches sync and async tools alike."""

from __future__ import annotations

import json
import time

import pytest
from flask import Flask

from tests.conftest import Tokens
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import HANDSHAKE
from tests.support.jsonrpc import MODERN
from tests.support.jsonrpc import call_tool
from tests.support.jsonrpc import result_of


@pytest.mark.parametrize("era", [MODERN, HANDSHAKE])
def test_whoami_reads_the_caller_through_the_sdk(app: Flask, tokens: Tokens, issuer: MockIssuer, era: str) -> None:
    token = tokens.mint("todo:read", sub="zoe", client_id=None, azp="spa-client", exp=2_000_000_000)
    headers, body = call_tool("whoami", era=era, token=token)
    response = app.test_client().post("/mcp", headers=headers, data=body)
    response.close()
    text = result_of(response.content_type, response.get_data())["result"]["content"][0]["text"]
    assert json.loads(text) == {
        "sub": "zoe",
        "client_id": "spa-client",
        "scopes": ["todo:read"],
        "issuer": issuer.issuer,
        "org_id": None,
        "expires_at": 2_000_000_000,
    }


def test_tools_never_see_the_raw_token(app: Flask, tokens: Tokens) -> None:
    from mcp.server.auth.middleware.auth_context import get_access_token

    seen: list[str] = []

    @app.extensions["mcp_bridge"].server.tool()
    def peek() -> str:
        access_token = get_access_token()
        assert access_token is not None
        seen.append(access_token.token)
        return "ok"

    token = tokens.mint()
    headers, body = call_tool("peek", token=token)
    app.test_client().post("/mcp", headers=headers, data=body).close()
    assert len(seen) == 1
    assert seen[0].startswith("sha256:")
    assert token not in seen[0]


@pytest.mark.parametrize("era", [MODERN, HANDSHAKE])
def test_a_client_that_goes_away_cancels_the_running_tool(app: Flask, tokens: Tokens, era: str) -> None:
    headers, body = call_tool("count_to", {"n": 50}, era=era, token=tokens.mint())
    payload = json.loads(body)
    payload["params"].setdefault("_meta", {})["progressToken"] = "p"
    response = app.test_client().post("/mcp", headers=headers, json=payload, buffered=False)
    assert response.status_code == 200
    first = next(iter(response.response))
    assert b"notifications/progress" in first
    started = time.monotonic()
    response.close()  # what gunicorn does when its write to the client fails
    # count_to(50) would run 10 s more; closing returns once the tool is cancelled.
    assert time.monotonic() - started < 2


def test_async_tools_read_the_caller_too(app: Flask, tokens: Tokens) -> None:
    from app.bridge.auth_context import current_principal

    @app.extensions["mcp_bridge"].server.tool()
    async def whoami_async() -> str:
        return current_principal().sub

    headers, body = call_tool("whoami_async", token=tokens.mint(sub="async-user"))
    response = app.test_client().post("/mcp", headers=headers, data=body)
    response.close()
    assert result_of(response.content_type, response.get_data())["result"]["content"][0]["text"] == "async-user"


def test_sync_tools_run_in_the_request_thread(app: Flask, tokens: Tokens) -> None:
    """No hop to a worker thread: the tool runs where the WSGI server called the app, as a Flask view would."""
    import threading

    seen: list[int] = []
    server = app.extensions["mcp_bridge"].server
    from app.mcp_server import in_request_thread

    @server.tool()
    @in_request_thread
    def where() -> str:
        seen.append(threading.get_ident())
        return "here"

    headers, body = call_tool("where", token=tokens.mint())
    response = app.test_client().post("/mcp", headers=headers, data=body)
    response.close()
    assert result_of(response.content_type, response.get_data())["result"]["content"][0]["text"] == "here"
    assert seen == [threading.get_ident()]
