"""RFC 7591 dynamic client registration at /dev-issuer/register."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.dev_issuer.conftest import ISSUER
from tests.dev_issuer.conftest import REDIRECT_URI
from tests.dev_issuer.conftest import register


def test_a_public_client_gets_no_secret_member_at_all(dev_client: FlaskClient) -> None:
    response = dev_client.post(
        ISSUER + "/register",
        json={
            "client_name": "Claude Code",
            "redirect_uris": [REDIRECT_URI],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "application_type": "native",
            "unknown_member": "dropped",
        },
    )
    assert response.status_code == 201
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    client_id, issued_at = body.pop("client_id"), body.pop("client_id_issued_at")
    assert len(client_id) == 42
    assert abs(issued_at - time.time()) < 60
    # The TypeScript SDK rejects "client_secret": null, so the member is absent.
    assert body == {
        "client_name": "Claude Code",
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "application_type": "native",
    }


def test_a_confidential_client_gets_a_secret_once(dev_client: FlaskClient) -> None:
    body = register(dev_client, token_endpoint_auth_method="client_secret_post", grant_types=["authorization_code"])
    assert len(str(body["client_secret"])) == 48
    assert body["client_secret_expires_at"] == 0
    stored = dev_client.application.extensions["dev_authorization_server"].storage.client(body["client_id"])
    assert stored.secret_hash != body["client_secret"]
    assert stored.check_client_secret(body["client_secret"])
    assert not stored.check_client_secret("wrong")


def test_defaults_follow_rfc_7591(dev_client: FlaskClient) -> None:
    body = dev_client.post(ISSUER + "/register", json={"redirect_uris": [REDIRECT_URI]}).get_json()
    # RFC 7591 section 2: the default auth method is client_secret_basic, the default grant authorization_code.
    assert body["token_endpoint_auth_method"] == "client_secret_basic"
    assert "client_secret" in body
    assert (body["grant_types"], body["response_types"], body["application_type"]) == (
        ["authorization_code"],
        ["code"],
        "native",
    )


def test_a_null_member_counts_as_omitted(dev_client: FlaskClient) -> None:
    body = register(dev_client, grant_types=None, client_name=None)
    assert body["grant_types"] == ["authorization_code"]
    assert "client_name" not in body


def test_registrations_survive_a_restart(dev_client: FlaskClient, tmp_path: Any) -> None:
    from app import create_app
    from app.settings import Settings

    client_id = register(dev_client, client_name="kept")["client_id"]
    again = create_app(Settings.from_mapping({"MCP_DEV": "1", "MCP_INSTANCE_PATH": str(tmp_path)}))
    try:
        stored = again.extensions["dev_authorization_server"].storage.client(client_id)
        assert (stored.name, stored.redirect_uris) == ("kept", [REDIRECT_URI])
    finally:
        again.extensions["mcp_bridge"].loops.close()


@pytest.mark.parametrize(
    ("body", "error", "description"),
    [
        pytest.param(
            {"redirect_uris": ["http://app.example.com/cb"]},
            "invalid_redirect_uri",
            "http://app.example.com/cb must use https (plain http only for loopback hosts)",
            id="http-redirect",
        ),
        pytest.param(
            {"redirect_uris": ["javascript:alert(1)"]},
            "invalid_redirect_uri",
            "the javascript scheme cannot be a redirect URI",
            id="javascript-redirect",
        ),
        pytest.param(
            {"token_endpoint_auth_method": "none"},
            "invalid_redirect_uri",
            "redirect_uris are required for the authorization_code grant",
            id="no-redirect",
        ),
        pytest.param(
            {"redirect_uris": "http://127.0.0.1/cb"},
            "invalid_client_metadata",
            "redirect_uris must be an array of strings",
            id="redirect-not-a-list",
        ),
        pytest.param(
            {"grant_types": ["client_credentials"], "token_endpoint_auth_method": "none"},
            "invalid_client_metadata",
            "client_credentials needs a confidential client, not auth method none",
            id="public-client-credentials",
        ),
        pytest.param(
            {"redirect_uris": [REDIRECT_URI], "grant_types": ["implicit"]},
            "invalid_client_metadata",
            "Invalid claim: 'grant_types'",
            id="implicit",
        ),
        pytest.param(
            {"redirect_uris": [REDIRECT_URI], "response_types": ["token"]},
            "invalid_client_metadata",
            "Invalid claim: 'response_types'",
            id="token-response",
        ),
        pytest.param(
            {"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "private_key_jwt"},
            "invalid_client_metadata",
            "Invalid claim: 'token_endpoint_auth_method'",
            id="unsupported-auth-method",
        ),
        pytest.param(
            {"redirect_uris": [REDIRECT_URI], "scope": "todo:read admin"},
            "invalid_client_metadata",
            "Invalid claim: 'scope'",
            id="unknown-scope",
        ),
        pytest.param(
            {"redirect_uris": [REDIRECT_URI], "application_type": "desktop"},
            "invalid_client_metadata",
            "application_type must be native or web",
            id="application-type",
        ),
        pytest.param(
            {"redirect_uris": [REDIRECT_URI], "client_name": 7},
            "invalid_client_metadata",
            "client_name must be a string",
            id="name-not-a-string",
        ),
        pytest.param(
            {"redirect_uris": [REDIRECT_URI], "client_uri": 5},
            "invalid_client_metadata",
            "client_uri must be a string",
            id="uri-not-a-string",
        ),
        pytest.param(
            {"redirect_uris": [REDIRECT_URI], "jwks": "keys"},
            "invalid_client_metadata",
            "jwks must be a JSON object (a JWK Set)",
            id="jwks-not-an-object",
        ),
        pytest.param(
            {"redirect_uris": [REDIRECT_URI], "client_name": "x" * 201},
            "invalid_client_metadata",
            "client_name must be at most 200 characters",
            id="long-name",
        ),
    ],
)
def test_refusals(dev_client: FlaskClient, body: dict[str, Any], error: str, description: str) -> None:
    response = dev_client.post(ISSUER + "/register", json=body)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert response.get_json() == {"error": error, "error_description": description}


NOT_AN_OBJECT = "The body must be a JSON object of client metadata (application/json)"
EMPTY = "The client metadata is empty (RFC 7591 section 2)"


@pytest.mark.parametrize(
    ("data", "content_type", "description"),
    [
        pytest.param(b"[1, 2]", "application/json", NOT_AN_OBJECT, id="array"),
        pytest.param(b"{not json", "application/json", NOT_AN_OBJECT, id="malformed"),
        pytest.param(b"redirect_uris=x", "application/x-www-form-urlencoded", NOT_AN_OBJECT, id="form"),
        pytest.param(b"{}", "application/json", EMPTY, id="empty"),
        pytest.param(b'{"client_name": null}', "application/json", EMPTY, id="nulls"),
    ],
)
def test_a_body_that_is_not_client_metadata(
    dev_client: FlaskClient, data: bytes, content_type: str, description: str
) -> None:
    response = dev_client.post(ISSUER + "/register", data=data, content_type=content_type)
    assert response.status_code == 400
    assert response.get_json() == {"error": "invalid_client_metadata", "error_description": description}
