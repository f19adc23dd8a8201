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


def test_a_request_without_origin_gets_what_flask_cors_would_give_it(issuer: MockIssuer, tmp_path: Path) -> None:
    """The MCP endpoint skips flask-cors's hook for requests without Origin: the headers are the same as with it."""
    from flask import request

    from app import cors

    app = browser_app(issuer, tmp_path)
    token = Tokens(issuer, RESOURCE).mint("todo:read")
    hooks = app.after_request_funcs[None]
    skipping = next(hook for hook in hooks if getattr(hook, "__name__", None) == "cors_after_request")
    flask_cors_hook = skipping.__closure__[0].cell_contents  # type: ignore[index]
    assert flask_cors_hook.__module__ == "flask_cors.extension"
    for headers in ({}, {"Authorization": f"Bearer {token}"}):
        with app.test_request_context("/mcp", method="POST", headers=headers, json=request_body("tools/list")):
            assert request.endpoint == "mcp"
            with_hook = flask_cors_hook(app.response_class("x"))
            skipped = skipping(app.response_class("x"))
            assert list(with_hook.headers) == list(skipped.headers)
    assert cors.MCP_RESPONSE_HEADERS == ["WWW-Authenticate", "Mcp-Session-Id", "DPoP-Nonce"]
    stop_worker(app)
