"""Revocation: a replayed code or refresh token revokes its grant, RFC 7009, and the MCP endpoint refusing both."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.dev_issuer.revocation import SYNC_INTERVAL
from app.dev_issuer.signing import KEY_FILE
from app.settings import Settings
from tests.dev_issuer.conftest import ISSUER
from tests.dev_issuer.conftest import ORIGIN
from tests.dev_issuer.conftest import redeem
from tests.dev_issuer.conftest import register
from tests.dev_issuer.conftest import register_public_client
from tests.dev_issuer.conftest import sign_in
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers

REVOKED = (
    'Bearer error="invalid_token", error_description="The access token was revoked", '
    'scope="todo:read todo:write todo:delete", resource_metadata="http://127.0.0.1:5000/.well-known/oauth-protected-resource/mcp"'
)


def mcp_status(client: FlaskClient, token: str) -> tuple[int, str | None]:
    response = client.post(
        ORIGIN + "/mcp", headers=request_headers("tools/list", token=token), json=request_body("tools/list")
    )
    response.close()
    return response.status_code, response.headers.get("WWW-Authenticate")


def refresh(client: FlaskClient, client_id: str, refresh_token: str) -> Any:
    return client.post(
        ISSUER + "/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id}
    )


@pytest.fixture
def signed_in(dev_client: FlaskClient) -> tuple[str, str, dict[str, Any]]:
    """(client_id, the code, the token response of its first redemption)."""
    client_id = register_public_client(dev_client)
    code, verifier = sign_in(dev_client, client_id)
    tokens = redeem(dev_client, client_id, code, verifier)
    assert tokens.status_code == 200
    return client_id, code, {**tokens.get_json(), "verifier": verifier}


class TestReplay:
    def test_a_replayed_code_revokes_the_access_token_it_produced(
        self, dev_client: FlaskClient, signed_in: tuple[str, str, dict[str, Any]]
    ) -> None:
        client_id, code, tokens = signed_in
        assert mcp_status(dev_client, tokens["access_token"]) == (200, None)
        again = redeem(dev_client, client_id, code, tokens["verifier"])
        assert again.status_code == 400
        assert again.get_json()["error"] == "invalid_grant"
        # RFC 6749 section 4.1.2: what the code produced is revoked; the cached verdict no longer counts.
        assert mcp_status(dev_client, tokens["access_token"]) == (401, REVOKED)
        assert refresh(dev_client, client_id, tokens["refresh_token"]).get_json()["error"] == "invalid_grant"

    def test_a_reused_refresh_token_revokes_every_access_token_of_the_grant(
        self, dev_client: FlaskClient, signed_in: tuple[str, str, dict[str, Any]]
    ) -> None:
        client_id, _, first = signed_in
        second = refresh(dev_client, client_id, first["refresh_token"]).get_json()
        assert mcp_status(dev_client, second["access_token"]) == (200, None)
        reused = refresh(dev_client, client_id, first["refresh_token"])
        assert reused.get_json()["error"] == "invalid_grant"
        assert mcp_status(dev_client, first["access_token"]) == (401, REVOKED)
        assert mcp_status(dev_client, second["access_token"]) == (401, REVOKED)
        assert refresh(dev_client, client_id, second["refresh_token"]).get_json()["error"] == "invalid_grant"

    def test_another_grant_of_the_same_user_is_untouched(
        self, dev_client: FlaskClient, signed_in: tuple[str, str, dict[str, Any]]
    ) -> None:
        client_id, code, tokens = signed_in
        other = redeem(dev_client, client_id, *sign_in(dev_client, client_id)).get_json()
        redeem(dev_client, client_id, code, tokens["verifier"])  # the replay of the first grant's code
        assert mcp_status(dev_client, tokens["access_token"])[0] == 401
        assert mcp_status(dev_client, other["access_token"]) == (200, None)


def revoke(client: FlaskClient, token: str, **form: str) -> Any:
    return client.post(ISSUER + "/revoke", data={"token": token, **form})


class TestRFC7009:
    def test_revoking_an_access_token(
        self, dev_client: FlaskClient, signed_in: tuple[str, str, dict[str, Any]]
    ) -> None:
        client_id, _, tokens = signed_in
        answer = revoke(dev_client, tokens["access_token"], client_id=client_id, token_type_hint="access_token")
        assert (answer.status_code, answer.get_json()) == (200, {})
        assert mcp_status(dev_client, tokens["access_token"]) == (401, REVOKED)
        # Only that token: the refresh token still works, and what it brings is accepted.
        fresh = refresh(dev_client, client_id, tokens["refresh_token"]).get_json()
        assert mcp_status(dev_client, fresh["access_token"]) == (200, None)

    def test_revoking_a_refresh_token_revokes_its_grant(
        self, dev_client: FlaskClient, signed_in: tuple[str, str, dict[str, Any]]
    ) -> None:
        client_id, _, tokens = signed_in
        # The hint is wrong on purpose: RFC 7009 section 2.2 says to look at the other types as well.
        answer = revoke(dev_client, tokens["refresh_token"], client_id=client_id, token_type_hint="access_token")
        assert answer.status_code == 200
        assert refresh(dev_client, client_id, tokens["refresh_token"]).get_json()["error"] == "invalid_grant"
        assert mcp_status(dev_client, tokens["access_token"]) == (401, REVOKED)

    def test_an_unknown_token_is_answered_200_and_changes_nothing(
        self, dev_client: FlaskClient, signed_in: tuple[str, str, dict[str, Any]]
    ) -> None:
        client_id, _, tokens = signed_in
        assert revoke(dev_client, "no-such-token", client_id=client_id).status_code == 200
        assert mcp_status(dev_client, tokens["access_token"]) == (200, None)

    def test_a_client_cannot_revoke_another_clients_token(
        self, dev_client: FlaskClient, signed_in: tuple[str, str, dict[str, Any]]
    ) -> None:
        _, _, tokens = signed_in
        stranger = str(register(dev_client)["client_id"])
        answer = revoke(dev_client, tokens["access_token"], client_id=stranger)
        assert answer.status_code == 400
        assert answer.get_json()["error"] == "invalid_grant"
        assert mcp_status(dev_client, tokens["access_token"]) == (200, None)

    def test_a_confidential_client_must_authenticate(self, dev_client: FlaskClient) -> None:
        registered = register(
            dev_client, grant_types=["client_credentials"], token_endpoint_auth_method="client_secret_basic"
        )
        client_id, secret = str(registered["client_id"]), str(registered["client_secret"])
        basic = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        token = dev_client.post(
            ISSUER + "/token", data={"grant_type": "client_credentials"}, headers={"Authorization": basic}
        ).get_json()["access_token"]
        refused = revoke(dev_client, token, client_id=client_id)
        assert refused.status_code in (400, 401)
        assert refused.get_json()["error"] == "invalid_client"
        assert mcp_status(dev_client, token) == (200, None)
        authenticated = dev_client.post(ISSUER + "/revoke", data={"token": token}, headers={"Authorization": basic})
        assert authenticated.status_code == 200
        assert mcp_status(dev_client, token) == (401, REVOKED)


def test_a_revocation_reaches_every_worker_within_a_second(
    dev_client: FlaskClient, signed_in: tuple[str, str, dict[str, Any]], tmp_path: Path, dev_key: str
) -> None:
    """Another worker process (another app on the same instance folder) refuses the token after its next sync."""
    client_id, _, tokens = signed_in
    other: Flask = create_app(Settings.from_mapping({"MCP_DEV": "1", "MCP_INSTANCE_PATH": str(tmp_path)}))
    try:
        other_client = other.test_client()
        assert mcp_status(other_client, tokens["access_token"]) == (200, None)
        now = [0.0]
        revoked = other.extensions["dev_authorization_server"].revoked
        revoked._clock = lambda: now[0]
        revoked.sync()
        assert revoke(dev_client, tokens["access_token"], client_id=client_id).status_code == 200
        assert mcp_status(other_client, tokens["access_token"]) == (200, None)  # not synced yet
        now[0] += SYNC_INTERVAL
        assert mcp_status(other_client, tokens["access_token"]) == (401, REVOKED)
    finally:
        other.extensions["mcp_bridge"].loops.close()
    assert (tmp_path / KEY_FILE).read_text() == dev_key


def test_tokens_are_recorded_by_grant_and_never_stored_whole(
    dev_client: FlaskClient, signed_in: tuple[str, str, dict[str, Any]], tmp_path: Path
) -> None:
    _, _, tokens = signed_in
    payload = tokens["access_token"].split(".")[1]
    jti = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]
    with sqlite3.connect(tmp_path / "dev-issuer.sqlite3") as db:
        rows = db.execute("SELECT jti, family IS NOT NULL, revoked_at FROM access_tokens").fetchall()
        dump = "\n".join(db.iterdump())
    assert rows == [(jti, 1, None)]
    assert tokens["access_token"] not in dump
    assert tokens["refresh_token"] not in dump
