"""RFC 8414 metadata, the JWK Set, CORS for browser clients, and the guard rails of development mode."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.auth.scopes import ScopePolicy
from app.dev_issuer.metadata import metadata_document
from app.dev_issuer.scopes import ScopeCatalogue
from app.settings import Settings
from tests.dev_issuer.conftest import ISSUER
from tests.dev_issuer.conftest import ORIGIN
from tests.support.dpop import DEFAULT_ALGORITHMS

EXPECTED = {
    "issuer": ISSUER,
    "authorization_endpoint": ISSUER + "/authorize",
    "token_endpoint": ISSUER + "/token",
    "registration_endpoint": ISSUER + "/register",
    # RFC 7009, with the token endpoint's client authentication.
    "revocation_endpoint": ISSUER + "/revoke",
    "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
    "jwks_uri": ISSUER + "/jwks.json",
    "scopes_supported": ["todo:read", "todo:write", "todo:delete"],
    "response_types_supported": ["code"],
    "response_modes_supported": ["query"],
    "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
    "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
    "code_challenge_methods_supported": ["S256"],
    "authorization_response_iss_parameter_supported": True,
    "client_id_metadata_document_supported": True,
    # RFC 9449 section 5.1: the token endpoint takes DPoP proofs signed with these.
    "dpop_signing_alg_values_supported": DEFAULT_ALGORITHMS,
}


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/oauth-authorization-server/dev-issuer",
        "/.well-known/openid-configuration/dev-issuer",
        "/dev-issuer/.well-known/oauth-authorization-server",
        "/dev-issuer/.well-known/openid-configuration",
    ],
)
def test_metadata(dev_client: FlaskClient, path: str) -> None:
    response = dev_client.get(ORIGIN + path)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.get_json() == EXPECTED


def test_the_server_offers_every_scope_a_tool_needs_even_when_the_resource_advertises_fewer(tmp_path: Path) -> None:
    app = create_app(
        Settings.from_mapping({"MCP_DEV": "1", "MCP_INSTANCE_PATH": str(tmp_path), "MCP_SCOPES_SUPPORTED": "todo:read"})
    )
    try:
        client = app.test_client()
        metadata = client.get(ORIGIN + "/.well-known/oauth-authorization-server/dev-issuer").get_json()
        resource = client.get(ORIGIN + "/.well-known/oauth-protected-resource/mcp").get_json()
    finally:
        app.extensions["mcp_bridge"].loops.close()
    assert metadata["scopes_supported"] == ["todo:read", "todo:delete", "todo:write"]
    assert resource["scopes_supported"] == ["todo:read"]


def test_scope_catalogue_describes_each_scope() -> None:
    policy = ScopePolicy({"notes:admin": ["notes:read"]})
    policy.require_for_tool("read_notes", ["notes:read"])
    policy.describe("notes:read", "Read your notes")
    catalogue = ScopeCatalogue.build(["profile"], policy)
    assert catalogue.supported == ("profile", "notes:admin", "notes:read")
    assert [catalogue.describe(s) for s in catalogue.supported] == [
        "The scope profile",
        "The scope notes:admin",
        "Read your notes",
    ]


def test_no_scopes_means_no_scopes_supported_member() -> None:
    document = metadata_document(ISSUER, [])
    assert "scopes_supported" not in document
    assert document["issuer"] == ISSUER


def test_jwks(dev_client: FlaskClient) -> None:
    response = dev_client.get(ORIGIN + "/dev-issuer/jwks.json")
    keys = response.get_json()["keys"]
    assert [(k["kty"], k["use"], k["alg"]) for k in keys] == [("RSA", "sig", "RS256")]
    assert "d" not in keys[0]


def test_browser_clients_on_loopback_may_register_and_redeem(dev_client: FlaskClient) -> None:
    preflight = dev_client.options(
        ORIGIN + "/dev-issuer/register",
        headers={
            "Origin": "http://localhost:6274",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://localhost:6274"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    token = dev_client.post(ORIGIN + "/dev-issuer/token", headers={"Origin": "http://127.0.0.1:6274"})
    assert token.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:6274"
    remote = dev_client.post(ORIGIN + "/dev-issuer/token", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in remote.headers


@pytest.mark.parametrize(
    "path",
    ["/dev-issuer/authorize", "/dev-issuer/jwks.json", "/.well-known/oauth-authorization-server/dev-issuer", "/"],
)
def test_only_loopback_hosts_are_served(dev_client: FlaskClient, path: str) -> None:
    response = dev_client.get(path, headers={"Host": "rebound.example:5000"})
    assert response.status_code == 421
    assert response.get_json() == {
        "error": "misdirected_request",
        "error_description": "Development mode answers loopback hosts only; this server is http://127.0.0.1:5000/mcp",
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/dev-issuer/authorize"),
        ("POST", "/dev-issuer/token"),
        ("POST", "/dev-issuer/register"),
        ("GET", "/dev-issuer/jwks.json"),
        ("GET", "/.well-known/oauth-authorization-server/dev-issuer"),
    ],
)
def test_nothing_of_it_exists_outside_development_mode(app: Flask, method: str, path: str) -> None:
    response = app.test_client().open(path, method=method)
    assert response.status_code == 401  # no such public route: the bearer check answers
    assert "dev_authorization_server" not in app.extensions
    assert "dev_issuer" not in app.extensions


def test_authlib_never_logs_issued_tokens(dev_app: Flask) -> None:
    # Authlib's grants log "Issue token {token!r}" at DEBUG.
    assert logging.getLogger("authlib").getEffectiveLevel() == logging.INFO
