"""CORS for browser-based MCP clients: preflights without a token, the MCP headers allowed, the challenge exposed."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from app import create_app
from app import stop_worker
from app.settings import Settings
from tests.conftest import RESOURCE
from tests.conftest import Tokens
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers

ORIGIN = "https://inspector.example.com"


def browser_app(issuer: MockIssuer, tmp_path: Path) -> Flask:
    return create_app(
        Settings.from_mapping(
            {
                "MCP_RESOURCE_URL": RESOURCE,
                "MCP_ISSUER": issuer.issuer,
                "MCP_ALLOWED_ORIGINS": ORIGIN,
                "MCP_INSTANCE_PATH": str(tmp_path),
            }
        )
    )


def test_a_preflight_needs_no_token_and_allows_every_mcp_header(issuer: MockIssuer, tmp_path: Path) -> None:
    app = browser_app(issuer, tmp_path)
    wanted = (
        "authorization, content-type, mcp-protocol-version, mcp-method, mcp-name, mcp-session-id, last-event-id, dpop"
    )
    response = app.test_client().options(
        "/mcp",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": wanted},
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert sorted(response.headers["Access-Control-Allow-Headers"].split(", ")) == sorted(wanted.split(", "))
    assert set(response.headers["Access-Control-Allow-Methods"].split(", ")) == {"GET", "POST", "DELETE"}
    assert "WWW-Authenticate" not in response.headers
    stop_worker(app)


def test_the_challenge_is_readable_by_the_page(issuer: MockIssuer, tmp_path: Path) -> None:
    app = browser_app(issuer, tmp_path)
    response = app.test_client().post("/mcp", headers={"Origin": ORIGIN}, json=request_body("tools/list"))
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    # The challenges, and RFC 9449's DPoP-Nonce, which a browser client must read to answer use_dpop_nonce.
    assert response.headers["Access-Control-Expose-Headers"] == "DPoP-Nonce, Mcp-Session-Id, WWW-Authenticate"
    stop_worker(app)


def test_a_foreign_origin_gets_403_even_for_a_preflight(issuer: MockIssuer, tmp_path: Path) -> None:
    app = browser_app(issuer, tmp_path)
    response = app.test_client().options(
        "/mcp", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    stop_worker(app)


def test_no_cors_headers_without_an_origin(client, tokens: Tokens) -> None:  # type: ignore[no-untyped-def]
    response = client.post(
        "/mcp", headers=request_headers("tools/list", token=tokens.mint()), json=request_body("tools/list")
    )
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers
