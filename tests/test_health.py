"""/healthz (no I/O) and /readyz (signing keys loaded)."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.support.issuer import MockIssuer


def test_healthz_is_public_and_does_no_io(client: FlaskClient, issuer: MockIssuer) -> None:
    before = len(issuer.requests)
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"
    assert len(issuer.requests) == before


def test_readyz_loads_the_keys(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "signing_keys": "fresh"}


def test_readyz_is_503_without_keys(client: FlaskClient, issuer: MockIssuer) -> None:
    issuer.down = True
    try:
        response = client.get("/readyz")
    finally:
        issuer.down = False
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "signing_keys": "missing"}
