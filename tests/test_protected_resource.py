"""RFC 9728 metadata: the same exact document at the path-inserted and the root URL."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from app import create_app
from app.settings import Settings
from tests.support.dpop import DEFAULT_ALGORITHMS
from tests.support.issuer import MockIssuer

EXPECTED = {
    "resource": "http://localhost/mcp",
    "bearer_methods_supported": ["header"],
    "resource_name": "Flask MCP server",
    "scopes_supported": ["todo:read", "todo:write"],
    # RFC 9449 section 5.1 via RFC 9728 section 2; MCP_DPOP=allowed (the default) omits the
    # dpop_bound_access_tokens_required member, whose default is false.
    "dpop_signing_alg_values_supported": DEFAULT_ALGORITHMS,
}


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"])
def test_document_at_both_locations(client: FlaskClient, issuer: MockIssuer, path: str) -> None:
    response = client.get(path, headers={"Origin": "https://app.example"})
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert response.headers["Cache-Control"] == "public, max-age=3600"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.get_json() == {**EXPECTED, "authorization_servers": [issuer.issuer]}


def test_never_redirects(client: FlaskClient) -> None:
    assert client.get("/.well-known/oauth-protected-resource/mcp/").status_code == 200


def test_zero_value_fields_are_omitted_and_urls_come_from_configuration(issuer: MockIssuer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings.from_mapping(
        {
            "MCP_RESOURCE_URL": "https://MCP.example.com/tools/mcp",
            "MCP_ISSUER": "https://login.example.com/tenant",
            "MCP_AUTHORIZATION_SERVERS": "https://login.example.com/tenant,https://backup.example.com",
            "MCP_INSTANCE_PATH": str(tmp_path),
            "MCP_DPOP": "off",
        }
    )
    app = create_app(settings)
    response = app.test_client().get(
        "/.well-known/oauth-protected-resource/tools/mcp", headers={"Host": "attacker.example", "X-Forwarded-Host": "x"}
    )
    assert response.get_json() == {
        "resource": "https://MCP.example.com/tools/mcp",
        "authorization_servers": ["https://login.example.com/tenant", "https://backup.example.com"],
        "bearer_methods_supported": ["header"],
        "resource_name": "Flask MCP server",
    }
    challenge = app.test_client().post("/tools/mcp", headers={"Host": "mcp.example.com"}).headers["WWW-Authenticate"]
    assert (
        challenge == 'Bearer resource_metadata="https://MCP.example.com/.well-known/oauth-protected-resource/tools/mcp"'
    )


@pytest.mark.parametrize(
    ("mode", "members"),
    [
        pytest.param("off", {}, id="off: nothing about DPoP"),
        pytest.param("allowed", {"dpop_signing_alg_values_supported": ["ES256", "EdDSA"]}, id="allowed"),
        pytest.param(
            "required",
            {"dpop_signing_alg_values_supported": ["ES256", "EdDSA"], "dpop_bound_access_tokens_required": True},
            id="required",
        ),
    ],
)
def test_dpop_members(issuer: MockIssuer, tmp_path, mode: str, members: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    settings = Settings.from_mapping(
        {
            "MCP_RESOURCE_URL": "https://mcp.example.com/mcp",
            "MCP_ISSUER": issuer.issuer,
            "MCP_INSTANCE_PATH": str(tmp_path),
            "MCP_DPOP": mode,
            "MCP_DPOP_ALGORITHMS": "ES256 EdDSA",
        }
    )
    document = create_app(settings).test_client().get("/.well-known/oauth-protected-resource/mcp").get_json()
    assert document == {
        "resource": "https://mcp.example.com/mcp",
        "authorization_servers": [issuer.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "Flask MCP server",
        **members,
    }
