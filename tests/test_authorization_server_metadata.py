"""MCP_AS_METADATA_PROXY=1: the upstream RFC 8414 document, verbatim, at this origin."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import create_app
from app import stop_worker
from app.settings import Settings
from app.settings import SettingsError
from tests.conftest import RESOURCE
from tests.support.issuer import MockIssuer


def test_off_by_default(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/.well-known/oauth-authorization-server").status_code == 401


def test_the_upstream_document_verbatim_and_cached(issuer: MockIssuer, tmp_path: Path) -> None:
    settings = Settings.from_mapping(
        {
            "MCP_RESOURCE_URL": RESOURCE,
            "MCP_ISSUER": issuer.issuer,
            "MCP_AS_METADATA_PROXY": "1",
            "MCP_INSTANCE_PATH": str(tmp_path),
        }
    )
    app = create_app(settings)
    client = app.test_client()
    before = len(issuer.requests)
    first = client.get("/.well-known/oauth-authorization-server")
    second = client.get("/.well-known/oauth-authorization-server")
    assert first.status_code == second.status_code == 200
    # The issuer stays the upstream one (RFC 8414 section 3.3); the protected resource metadata still names it.
    assert first.get_json() == issuer.metadata()
    assert first.headers["Cache-Control"] == "public, max-age=3600"
    assert len(issuer.requests) == before + 1
    prm = client.get("/.well-known/oauth-protected-resource/mcp").get_json()
    assert prm["authorization_servers"] == [issuer.issuer]
    stop_worker(app)


def test_upstream_down_is_503(issuer: MockIssuer, tmp_path: Path) -> None:
    settings = Settings.from_mapping(
        {
            "MCP_RESOURCE_URL": RESOURCE,
            "MCP_ISSUER": issuer.issuer,
            "MCP_AS_METADATA_PROXY": "1",
            "MCP_INSTANCE_PATH": str(tmp_path),
        }
    )
    app = create_app(settings)
    issuer.down = True
    try:
        response = app.test_client().get("/.well-known/oauth-authorization-server")
    finally:
        issuer.down = False
    assert response.status_code == 503
    assert response.get_json() == {
        "error": "temporarily_unavailable",
        "error_description": "The metadata could not be fetched",
    }
    stop_worker(app)


def test_upstream_down_says_to_retry_after_the_configured_cooldown(issuer: MockIssuer, tmp_path: Path) -> None:
    settings = Settings.from_mapping(
        {
            "MCP_RESOURCE_URL": RESOURCE,
            "MCP_ISSUER": issuer.issuer,
            "MCP_AS_METADATA_PROXY": "1",
            "MCP_JWKS_REFETCH_COOLDOWN": "45",
            "MCP_INSTANCE_PATH": str(tmp_path),
        }
    )
    app = create_app(settings)
    issuer.down = True
    try:
        response = app.test_client().get("/.well-known/oauth-authorization-server")
    finally:
        issuer.down = False
    assert (response.status_code, response.headers["Retry-After"]) == (503, "45")
    stop_worker(app)


def test_refused_in_development_mode() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_mapping({"MCP_DEV": "1", "MCP_AS_METADATA_PROXY": "1"})
    assert str(caught.value) == (
        "MCP_AS_METADATA_PROXY: is for an upstream authorization server; not in development mode"
    )
