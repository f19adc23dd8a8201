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


REMOTE_REFUSED = {
    "error": "forbidden",
    "error_description": "Development mode (MCP_DEV=1) answers requests from this machine only: its authorization "
    "server issues tokens to anyone who asks. To let other machines in, knowing that, set MCP_DEV_ALLOW_REMOTE=1",
}
CLIENT_METADATA = {
    "redirect_uris": ["http://127.0.0.1:8765/cb"],
    "grant_types": ["client_credentials"],
    "token_endpoint_auth_method": "client_secret_post",
}


def dev_client(tmp_path, **env: str) -> FlaskClient:  # type: ignore[no-untyped-def]
    return create_app(Settings.from_mapping({"MCP_DEV": "1", "MCP_INSTANCE_PATH": str(tmp_path), **env})).test_client()


@pytest.mark.parametrize(
    ("peer", "headers"),
    [
        pytest.param("192.0.2.10", {}, id="another-machine"),
        pytest.param("10.0.0.5", {}, id="private-network"),
        pytest.param("172.17.0.1", {}, id="container-host"),
        pytest.param("127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}, id="through-a-proxy"),
        pytest.param("127.0.0.1", {"Forwarded": "for=203.0.113.9"}, id="through-a-proxy-rfc7239"),
    ],
)
@pytest.mark.parametrize(
    "path", ["/dev-issuer/register", "/mcp", "/", "/.well-known/oauth-protected-resource/mcp", "/dev-issuer/token"]
)
def test_development_mode_refuses_other_machines_whatever_their_host_header(
    tmp_path, peer: str, headers: dict[str, str], path: str
) -> None:  # type: ignore[no-untyped-def]
    """Bound to 0.0.0.0 (a container port), the development server used to mint tokens for anyone who sent
    ``Host: 127.0.0.1:5000``; the judge is now the peer's address."""
    client = dev_client(tmp_path)
    response = client.post(
        "http://127.0.0.1:5000" + path,
        headers={"Host": "127.0.0.1:5000", **headers},
        json=CLIENT_METADATA,
        environ_base={"REMOTE_ADDR": peer},
    )
    assert response.status_code == 403
    assert response.get_json() == REMOTE_REFUSED
    assert "WWW-Authenticate" not in response.headers


def test_development_mode_answers_this_machine(tmp_path) -> None:  # type: ignore[no-untyped-def]
    client = dev_client(tmp_path)
    for peer in ("127.0.0.1", "::1", "127.0.0.2"):
        response = client.post(
            "http://127.0.0.1:5000/dev-issuer/register", json=CLIENT_METADATA, environ_base={"REMOTE_ADDR": peer}
        )
        assert response.status_code == 201, peer


def test_development_mode_can_be_opened_to_other_machines_explicitly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    client = dev_client(tmp_path, MCP_DEV_ALLOW_REMOTE="1")
    remote = {"REMOTE_ADDR": "192.0.2.10"}
    registered = client.post("http://127.0.0.1:5000/dev-issuer/register", json=CLIENT_METADATA, environ_base=remote)
    assert registered.status_code == 201
    # The Host check stays: a page that rebinds its name still cannot reach the authorization server.
    rebound = client.post("http://evil.example/dev-issuer/register", json=CLIENT_METADATA, environ_base=remote)
    assert rebound.status_code == 421


def test_behind_a_trusted_proxy_the_forwarded_address_is_judged(tmp_path) -> None:  # type: ignore[no-untyped-def]
    client = dev_client(tmp_path, MCP_TRUSTED_PROXIES="1")
    local = client.post(
        "http://127.0.0.1:5000/dev-issuer/register",
        json=CLIENT_METADATA,
        headers={"X-Forwarded-For": "127.0.0.1"},
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
    )
    assert local.status_code == 201
    remote = client.post(
        "http://127.0.0.1:5000/dev-issuer/register",
        json=CLIENT_METADATA,
        headers={"X-Forwarded-For": "198.51.100.7"},
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
    )
    assert remote.status_code == 403


def test_allow_remote_is_for_development_mode_only(issuer) -> None:  # type: ignore[no-untyped-def]
    from app.settings import SettingsError

    with pytest.raises(SettingsError) as refused:
        Settings.from_mapping(
            {
                "MCP_RESOURCE_URL": "https://mcp.example.com/mcp",
                "MCP_ISSUER": issuer.issuer,
                "MCP_DEV_ALLOW_REMOTE": "1",
            }
        )
    assert str(refused.value) == "MCP_DEV_ALLOW_REMOTE: only applies to development mode (MCP_DEV=1)"
