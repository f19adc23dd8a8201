"""An app in development mode, a test client that talks to it on its loopback origin, and the sign-in steps."""

from __future__ import annotations

import json
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc.jwk import RSAKey
from werkzeug.test import TestResponse

from app import create_app
from app.dev_issuer.signing import KEY_FILE
from app.settings import Settings
from tests.support.oauth import pkce
from tests.support.oauth import query_of
from tests.support.oauth import read_form

ORIGIN = "http://127.0.0.1:5000"
ISSUER = ORIGIN + "/dev-issuer"
RESOURCE = ORIGIN + "/mcp"
REDIRECT_URI = "http://127.0.0.1:8765/callback"


@pytest.fixture(scope="session")
def dev_key(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One development key for the session: generating an RSA key per test would dominate the run."""
    return json.dumps(RSAKey.generate_key(2048, auto_kid=True).as_dict(private=True))


def start_dev_app(folder: Path, dev_key: str, **env: str) -> Flask:
    """An app in development mode on ``folder``, with the session's key and ``env`` over the defaults."""
    (folder / KEY_FILE).write_text(dev_key)
    return create_app(Settings.from_mapping({"MCP_DEV": "1", "MCP_INSTANCE_PATH": str(folder), **env}))


@pytest.fixture
def dev_app(tmp_path: Path, dev_key: str) -> Iterator[Flask]:
    """The app in development mode, on this test's instance folder."""
    application = start_dev_app(tmp_path, dev_key)
    yield application
    application.extensions["mcp_bridge"].loops.close()


@pytest.fixture
def dev_client(dev_app: Flask) -> FlaskClient:
    """A test client of ``dev_app``."""
    return dev_app.test_client()


@pytest.fixture
def make_dev_client(tmp_path: Path, dev_key: str) -> Iterator[Callable[..., FlaskClient]]:
    """Test clients of further development-mode apps, each on its own instance folder, ``env`` over the defaults."""
    apps: list[Flask] = []

    def make(**env: str) -> FlaskClient:
        folder = tmp_path / f"instance-{len(apps)}"
        folder.mkdir()
        apps.append(start_dev_app(folder, dev_key, **env))
        return apps[-1].test_client()

    yield make
    for application in apps:
        application.extensions["mcp_bridge"].loops.close()


def register(client: FlaskClient, **metadata: object) -> dict[str, object]:
    body = {"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none", **metadata}
    response = client.post(ISSUER + "/register", json=body)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()  # type: ignore[no-any-return]


def register_public_client(client: FlaskClient) -> str:
    """A public client (no secret) that may use authorization codes and refresh tokens."""
    return str(register(client, grant_types=["authorization_code", "refresh_token"])["client_id"])


def authorize_path(client_id: str, challenge: str, /, **params: str | None) -> str:
    """The authorization request; ``params`` replace the defaults, None leaves one out."""
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "todo:read todo:delete",
        "state": "s1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **params,
    }
    return ISSUER + "/authorize?" + urlencode({k: v for k, v in query.items() if v is not None})


def submit(client: FlaskClient, page: TestResponse, **fields: str) -> TestResponse:
    """Send the form on ``page`` with ``fields`` filled in."""
    form = read_form(page.get_data(as_text=True))
    return client.post(ORIGIN + form.action, data={**form.fields, **fields})


def sign_in(client: FlaskClient, client_id: str, username: str = "dora") -> tuple[str, str]:
    """A code for ``todo:read`` and its verifier, through the consent page."""
    verifier, challenge = pkce()
    page = client.get(authorize_path(client_id, challenge, scope="todo:read", resource=RESOURCE))
    answer = submit(client, page, username=username, decision="allow")
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return query_of(answer.headers["Location"])["code"], verifier


def redeem(
    client: FlaskClient, client_id: str, code: str, verifier: str, proof: str | None = None, **headers: str
) -> TestResponse:
    """The token request for a code, with a DPoP proof when one is given, and ``headers``."""
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "client_id": client_id,
        "code_verifier": verifier,
        "resource": RESOURCE,
    }
    return client.post(ISSUER + "/token", data=data, headers={**({"DPoP": proof} if proof else {}), **headers})
