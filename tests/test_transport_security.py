"""Origin (403) and Host (421) checks on the MCP endpoint, ahead of authentication."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from app import create_app
from app.settings import Settings
from tests.conftest import Tokens
from tests.support.jsonrpc import request_headers


@pytest.mark.parametrize(
    "origin",
    [
        pytest.param("https://evil.example", id="foreign"),
        pytest.param("null", id="null origin"),
        pytest.param("http://localhost:8080", id="same host other port"),
    ],
)
def test_foreign_origin_is_403_before_authentication(client: FlaskClient, tokens: Tokens, origin: str) -> None:
    response = client.post("/mcp", headers={**request_headers("tools/list", token=tokens.mint()), "Origin": origin})
    assert response.status_code == 403
    assert "WWW-Authenticate" not in response.headers
    assert response.get_json() == {
        "error": "forbidden_origin",
        "error_description": "Requests from this origin are not allowed",
    }


def test_own_origin_and_no_origin_pass(client: FlaskClient) -> None:
    assert client.post("/mcp", headers={"Origin": "http://localhost"}).status_code == 401
    assert client.post("/mcp").status_code == 401


@pytest.mark.parametrize("host", ["evil.example", "localhost:8080", "127.0.0.1"])
def test_foreign_host_is_421(client: FlaskClient, host: str) -> None:
    response = client.post("/mcp", headers={"Host": host})
    assert response.status_code == 421
    assert response.get_json() == {
        "error": "misdirected_request",
        "error_description": "This server does not serve the requested host",
    }


@pytest.mark.parametrize("host", ["localhost", "localhost:80", "LOCALHOST"])
def test_own_host_passes(client: FlaskClient, host: str) -> None:
    assert client.post("/mcp", headers={"Host": host}).status_code == 401


def test_configured_origins_are_allowed(tmp_path, issuer) -> None:  # type: ignore[no-untyped-def]
    settings = Settings.from_mapping(
        {
            "MCP_RESOURCE_URL": "http://localhost/mcp",
            "MCP_ISSUER": issuer.issuer,
            "MCP_ALLOWED_ORIGINS": "https://app.example.com, https://other.example.com",
            "MCP_INSTANCE_PATH": str(tmp_path),
        }
    )
    client = create_app(settings).test_client()
    response = client.post("/mcp", headers={"Origin": "https://app.example.com"})
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert response.headers["Access-Control-Expose-Headers"] == "DPoP-Nonce, Mcp-Session-Id, WWW-Authenticate"
    assert client.post("/mcp", headers={"Origin": "https://third.example.com"}).status_code == 403


def test_development_mode_accepts_loopback_hosts_and_origins(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings.from_mapping({"MCP_DEV": "1", "MCP_INSTANCE_PATH": str(tmp_path)})
    client = create_app(settings).test_client()
    for host, origin in [("localhost:5000", "http://localhost:6274"), ("127.0.0.1:5000", "http://127.0.0.1:6274")]:
        assert client.post("/mcp", headers={"Host": host, "Origin": origin}).status_code == 401
    assert client.post("/mcp", headers={"Host": "evil.example"}).status_code == 421
    assert client.post("/mcp", headers={"Host": "localhost:5000", "Origin": "https://evil.example"}).status_code == 403


@pytest.mark.parametrize("path", ["/mcp", "/", "/.well-known/oauth-protected-resource/mcp", "/dev-issuer/jwks.json"])
@pytest.mark.parametrize("host", ["127.0.0.1:5077", "localhost:8080", "[::1]:5001"])
def test_development_mode_names_the_configured_url_to_another_port(tmp_path, path: str, host: str) -> None:  # type: ignore[no-untyped-def]
    settings = Settings.from_mapping({"MCP_DEV": "1", "MCP_INSTANCE_PATH": str(tmp_path)})
    app = create_app(settings)
    response = app.test_client().get(path, headers={"Host": host})
    assert response.status_code == 421
    assert response.get_json() == {
        "error": "misdirected_request",
        "error_description": "This development server is configured for http://127.0.0.1:5000/mcp "
        f"(MCP_RESOURCE_URL), but the request was sent to {host}: connect to that URL, or set MCP_RESOURCE_URL "
        "to the one clients use",
    }
    assert (
        app.test_client().get("/.well-known/oauth-protected-resource/mcp", headers={"Host": "[::1]:5000"}).status_code
        == 200
    )
    app.extensions["mcp_bridge"].loops.close()
