"""An app in development mode, and a test client that talks to it on its loopback origin."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc.jwk import RSAKey

from app import create_app
from app.dev_issuer.signing import KEY_FILE
from app.settings import Settings

ORIGIN = "http://127.0.0.1:5000"
ISSUER = ORIGIN + "/dev-issuer"
RESOURCE = ORIGIN + "/mcp"
REDIRECT_URI = "http://127.0.0.1:8765/callback"


@pytest.fixture(scope="session")
def dev_key(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One development key for the session: generating an RSA key per test would dominate the run."""
    return json.dumps(RSAKey.generate_key(2048, auto_kid=True).as_dict(private=True))


@pytest.fixture
def dev_app(tmp_path: Path, dev_key: str) -> Iterator[Flask]:
    (tmp_path / KEY_FILE).write_text(dev_key)
    application = create_app(Settings.from_mapping({"MCP_DEV": "1", "MCP_INSTANCE_PATH": str(tmp_path)}))
    yield application
    application.extensions["mcp_bridge"].loops.close()


@pytest.fixture
def dev_client(dev_app: Flask) -> FlaskClient:
    return dev_app.test_client()


def register(client: FlaskClient, **metadata: object) -> dict[str, object]:
    body = {"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none", **metadata}
    response = client.post(ISSUER + "/register", json=body)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()  # type: ignore[no-any-return]
