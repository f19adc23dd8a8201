"""RFC 9449 at the development authorization server's token endpoint, driven through its real HTTP endpoints.

A token request with a valid DPoP proof gets ``token_type: DPoP`` and an access
token with ``cnf.jkt``; a public client's refresh token is bound to the key; a
bad proof is ``invalid_dpop_proof`` and spends nothing; the token then works
at the MCP endpoint only with proofs from the same key.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from joserfc import jwt

from app.dev_issuer.models import RefreshToken
from app.dev_issuer.storage import Storage
from tests.dev_issuer.conftest import ISSUER
from tests.dev_issuer.conftest import ORIGIN
from tests.dev_issuer.conftest import REDIRECT_URI
from tests.dev_issuer.conftest import RESOURCE
from tests.dev_issuer.conftest import redeem
from tests.dev_issuer.conftest import register
from tests.dev_issuer.conftest import register_public_client
from tests.dev_issuer.conftest import sign_in
from tests.support.dpop import DPoPKey
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers

TOKEN_URL = ISSUER + "/token"
KEY = DPoPKey.generate("EC")
OTHER_KEY = DPoPKey.generate("EC")


@pytest.fixture
def client(make_dev_client: Callable[..., FlaskClient]) -> FlaskClient:
    """A test client of a development-mode app (``make_dev_client`` makes ones with other settings)."""
    return make_dev_client()


def refresh(client: FlaskClient, client_id: str, refresh_token: str, proof: str | None, **headers: str) -> Any:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id}
    return client.post(TOKEN_URL, data=data, headers={**({"DPoP": proof} if proof else {}), **headers})


def claims_of(client: FlaskClient, access_token: str) -> dict[str, Any]:
    return dict(jwt.decode(access_token, client.application.extensions["dev_issuer"].key).claims)


def refresh_bindings(client: FlaskClient, client_id: str) -> list[tuple[Any, ...]]:
    """(jkt, used) of each refresh token issued to the client."""
    path = client.application.extensions["dev_authorization_server"].storage.path
    with closing(sqlite3.connect(path)) as db:
        return db.execute(
            "SELECT jkt, used_at IS NOT NULL FROM refresh_tokens WHERE client_id = ? ORDER BY rowid", (client_id,)
        ).fetchall()


def oauth_error(response: Any, error: str, description: str, status: int = 400) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_json() == {"error": error, "error_description": description}


class TestAuthorizationCode:
    def test_a_proof_gets_a_dpop_bound_token_and_a_bound_refresh_token(self, client: FlaskClient) -> None:
        client_id = register_public_client(client)
        code, verifier = sign_in(client, client_id)
        response = redeem(client, client_id, code, verifier, KEY.proof("POST", TOKEN_URL))
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert body["token_type"] == "DPoP"
        assert claims_of(client, body["access_token"])["cnf"] == {"jkt": KEY.jkt}
        assert refresh_bindings(client, client_id) == [(KEY.jkt, 0)]

    def test_without_a_proof_the_token_is_a_bearer_token(self, client: FlaskClient) -> None:
        client_id = register_public_client(client)
        code, verifier = sign_in(client, client_id)
        body = redeem(client, client_id, code, verifier, None).get_json()
        assert body["token_type"] == "Bearer"
        assert "cnf" not in claims_of(client, body["access_token"])
        assert refresh_bindings(client, client_id) == [(None, 0)]

    @pytest.mark.parametrize(
        ("proof", "description"),
        [
            pytest.param(
                lambda: KEY.proof("POST", RESOURCE),
                "The DPoP proof's htu does not match the URL of this endpoint",
                id="made for the resource, not the token endpoint",
            ),
            pytest.param(
                lambda: KEY.proof("GET", TOKEN_URL),
                "The DPoP proof's htm does not match the request method",
                id="wrong htm",
            ),
            pytest.param(
                lambda: KEY.proof("POST", TOKEN_URL, claims={"iat": int(time.time()) - 600}),
                "The DPoP proof is too old (iat)",
                id="stale",
            ),
            pytest.param(
                lambda: KEY.proof("POST", TOKEN_URL, header={"jwk": OTHER_KEY.public_jwk}),
                "The DPoP proof signature is invalid",
                id="signed by another key",
            ),
            pytest.param(
                lambda: KEY.proof("POST", TOKEN_URL, header={"typ": "JWT"}),
                "The DPoP proof must have typ dpop+jwt",
                id="typ",
            ),
        ],
    )
    def test_a_bad_proof_is_refused_and_leaves_the_code_usable(
        self, client: FlaskClient, proof: Callable[[], str], description: str
    ) -> None:
        client_id = register_public_client(client)
        code, verifier = sign_in(client, client_id)
        oauth_error(redeem(client, client_id, code, verifier, proof()), "invalid_dpop_proof", description)
        assert refresh_bindings(client, client_id) == []
        again = redeem(client, client_id, code, verifier, KEY.proof("POST", TOKEN_URL))
        assert again.status_code == 200, again.get_json()
        assert again.get_json()["token_type"] == "DPoP"

    def test_a_replayed_token_request_proof_is_refused(self, client: FlaskClient) -> None:
        client_id = register_public_client(client)
        proof = KEY.proof("POST", TOKEN_URL)
        code, verifier = sign_in(client, client_id)
        assert redeem(client, client_id, code, verifier, proof).status_code == 200
        code, verifier = sign_in(client, client_id)
        oauth_error(
            redeem(client, client_id, code, verifier, proof),
            "invalid_dpop_proof",
            "The DPoP proof was already used (jti)",
        )

    def test_two_proof_headers(self, client: FlaskClient) -> None:
        client_id = register_public_client(client)
        code, verifier = sign_in(client, client_id)
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "client_id": client_id,
            "code_verifier": verifier,
        }
        headers = [("DPoP", KEY.proof("POST", TOKEN_URL)), ("DPoP", KEY.proof("POST", TOKEN_URL))]
        oauth_error(
            client.post(TOKEN_URL, data=data, headers=headers),
            "invalid_dpop_proof",
            "Send exactly one DPoP proof header",
        )

    def test_a_confidential_clients_refresh_token_is_not_bound(self, client: FlaskClient) -> None:
        registered = register(
            client,
            token_endpoint_auth_method="client_secret_basic",
            grant_types=["authorization_code", "refresh_token"],
        )
        client_id = str(registered["client_id"])
        basic = base64.b64encode(f"{client_id}:{registered['client_secret']}".encode()).decode()
        code, verifier = sign_in(client, client_id)
        response = redeem(
            client, client_id, code, verifier, KEY.proof("POST", TOKEN_URL), Authorization=f"Basic {basic}"
        )
        assert response.status_code == 200, response.get_json()
        assert claims_of(client, response.get_json()["access_token"])["cnf"] == {"jkt": KEY.jkt}
        # RFC 9449 section 5: its refresh token is bound to its credentials already.
        assert refresh_bindings(client, client_id) == [(None, 0)]
        again = refresh(client, client_id, response.get_json()["refresh_token"], None, Authorization=f"Basic {basic}")
        assert again.status_code == 200
        assert again.get_json()["token_type"] == "Bearer"


class TestRefresh:
    @pytest.fixture
    def bound_refresh(self, client: FlaskClient) -> tuple[str, str]:
        client_id = register_public_client(client)
        code, verifier = sign_in(client, client_id)
        body = redeem(client, client_id, code, verifier, KEY.proof("POST", TOKEN_URL)).get_json()
        return client_id, body["refresh_token"]

    def test_with_the_same_key(self, client: FlaskClient, bound_refresh: tuple[str, str]) -> None:
        client_id, token = bound_refresh
        response = refresh(client, client_id, token, KEY.proof("POST", TOKEN_URL))
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert body["token_type"] == "DPoP"
        assert claims_of(client, body["access_token"])["cnf"] == {"jkt": KEY.jkt}
        assert refresh_bindings(client, client_id) == [(KEY.jkt, 1), (KEY.jkt, 0)]

    def test_without_a_proof(self, client: FlaskClient, bound_refresh: tuple[str, str]) -> None:
        client_id, token = bound_refresh
        oauth_error(
            refresh(client, client_id, token, None),
            "invalid_dpop_proof",
            "This refresh token is bound to a DPoP key: send a DPoP proof made with it",
        )
        assert refresh_bindings(client, client_id) == [(KEY.jkt, 0)]  # not spent

    def test_with_another_key(self, client: FlaskClient, bound_refresh: tuple[str, str]) -> None:
        client_id, token = bound_refresh
        oauth_error(
            refresh(client, client_id, token, OTHER_KEY.proof("POST", TOKEN_URL)),
            "invalid_grant",
            "The refresh token is bound to another DPoP key",
        )
        assert refresh_bindings(client, client_id) == [(KEY.jkt, 0)]  # a thief's attempt spends nothing
        assert refresh(client, client_id, token, KEY.proof("POST", TOKEN_URL)).status_code == 200


def test_client_credentials_with_a_proof(client: FlaskClient) -> None:
    registered = register(
        client, token_endpoint_auth_method="client_secret_basic", grant_types=["client_credentials"], scope="todo:read"
    )
    basic = base64.b64encode(f"{registered['client_id']}:{registered['client_secret']}".encode()).decode()
    data = {"grant_type": "client_credentials", "scope": "todo:read", "resource": RESOURCE}
    headers = {"Authorization": f"Basic {basic}"}
    bound = client.post(TOKEN_URL, data=data, headers={**headers, "DPoP": KEY.proof("POST", TOKEN_URL)})
    assert bound.status_code == 200, bound.get_json()
    assert bound.get_json()["token_type"] == "DPoP"
    assert claims_of(client, bound.get_json()["access_token"])["cnf"] == {"jkt": KEY.jkt}
    plain = client.post(TOKEN_URL, data=data, headers=headers)
    assert plain.get_json()["token_type"] == "Bearer"


def test_the_bound_token_works_at_the_mcp_endpoint_only_with_its_key(client: FlaskClient) -> None:
    client_id = register_public_client(client)
    code, verifier = sign_in(client, client_id)
    token = redeem(client, client_id, code, verifier, KEY.proof("POST", TOKEN_URL)).get_json()["access_token"]
    body = json.dumps(request_body("tools/list"))
    headers = {k: v for k, v in request_headers("tools/list").items()}
    ok = client.post(
        RESOURCE,
        headers={**headers, "Authorization": f"DPoP {token}", "DPoP": KEY.proof("POST", RESOURCE, access_token=token)},
        data=body,
    )
    assert ok.status_code == 200, ok.get_data(as_text=True)
    stolen = client.post(RESOURCE, headers={**headers, "Authorization": f"Bearer {token}"}, data=body)
    assert stolen.status_code == 401
    assert stolen.get_json()["error_description"] == (
        "The access token is DPoP-bound: send it with the DPoP scheme and a proof"
    )
    other = client.post(
        RESOURCE,
        headers={
            **headers,
            "Authorization": f"DPoP {token}",
            "DPoP": OTHER_KEY.proof("POST", RESOURCE, access_token=token),
        },
        data=body,
    )
    assert other.status_code == 401
    assert other.get_json()["error_description"] == "The access token is bound to another DPoP key than the proof's"


class TestModes:
    def test_nonces(self, make_dev_client: Callable[..., FlaskClient]) -> None:
        client = make_dev_client(MCP_DPOP_NONCE="1")
        client_id = register_public_client(client)
        code, verifier = sign_in(client, client_id)
        first = redeem(client, client_id, code, verifier, KEY.proof("POST", TOKEN_URL))
        # RFC 9449 section 8: 400 use_dpop_nonce with the nonce in DPoP-Nonce.
        oauth_error(first, "use_dpop_nonce", "This server requires a nonce in the DPoP proof")
        nonce = first.headers["DPoP-Nonce"]
        assert refresh_bindings(client, client_id) == []
        second = redeem(client, client_id, code, verifier, KEY.proof("POST", TOKEN_URL, nonce=nonce))
        assert second.status_code == 200, second.get_json()
        assert second.get_json()["token_type"] == "DPoP"
        # The resource server's nonces are its own (section 9).
        token = second.get_json()["access_token"]
        response = client.post(
            RESOURCE,
            headers={
                **request_headers("tools/list"),
                "Authorization": f"DPoP {token}",
                "DPoP": KEY.proof("POST", RESOURCE, access_token=token, nonce=nonce),
            },
            data=json.dumps(request_body("tools/list")),
        )
        assert response.status_code == 401
        assert response.get_json()["error"] == "use_dpop_nonce"
        assert response.headers["DPoP-Nonce"] != nonce

    def test_required_refuses_a_token_request_without_a_proof(
        self, make_dev_client: Callable[..., FlaskClient]
    ) -> None:
        client = make_dev_client(MCP_DPOP="required")
        client_id = register_public_client(client)
        code, verifier = sign_in(client, client_id)
        oauth_error(
            redeem(client, client_id, code, verifier, None),
            "invalid_dpop_proof",
            "This authorization server issues DPoP-bound tokens only: send a proof",
        )
        assert redeem(client, client_id, code, verifier, KEY.proof("POST", TOKEN_URL)).status_code == 200

    def test_off_ignores_proofs(self, make_dev_client: Callable[..., FlaskClient]) -> None:
        client = make_dev_client(MCP_DPOP="off")
        client_id = register_public_client(client)
        code, verifier = sign_in(client, client_id)
        body = redeem(client, client_id, code, verifier, "not even a proof").get_json()
        assert body["token_type"] == "Bearer"
        assert "cnf" not in claims_of(client, body["access_token"])
        metadata = client.get(ORIGIN + "/.well-known/oauth-authorization-server/dev-issuer").get_json()
        assert "dpop_signing_alg_values_supported" not in metadata


def test_an_instance_folder_from_before_dpop_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "dev-issuer.sqlite3"
    with closing(sqlite3.connect(path)) as db:
        db.execute(
            "CREATE TABLE refresh_tokens (token_hash TEXT PRIMARY KEY, family TEXT NOT NULL, client_id TEXT NOT NULL, "
            "subject TEXT NOT NULL, scope TEXT NOT NULL, resource TEXT NOT NULL, issued_at INTEGER NOT NULL, "
            "expires_at INTEGER NOT NULL, used_at INTEGER, revoked_at INTEGER)"
        )
        db.execute("INSERT INTO refresh_tokens VALUES ('h', 'f', 'c', 's', '', 'r', 1, 2, NULL, NULL)")
        db.commit()
    storage = Storage(path)
    record = storage.find(RefreshToken, "h")
    assert record is not None and record.jkt is None
    Storage(path)  # a second start finds the column there
