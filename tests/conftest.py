"""Fixtures in the flaskr shape: ``app``, ``client`` and ``runner``, plus a real token issuer."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask.testing import FlaskCliRunner

from app import create_app
from app import stop_worker
from app.settings import Settings
from tests.support.issuer import MockIssuer
from tests.support.token_scan import TokenSniffer

RESOURCE = "http://localhost/mcp"

# Every log record of this process is checked for tokens, test by test; servers the tests start check
# their own logs when they stop (tests/support/servers.py).
SNIFFER = TokenSniffer()
for _name in ("", "app.audit"):
    logging.getLogger(_name).addHandler(SNIFFER)


@pytest.fixture(autouse=True)
def no_token_is_ever_logged() -> Iterator[None]:
    before = len(SNIFFER.hits)
    yield
    assert SNIFFER.hits[before:] == [], "a token reached a log line"


@pytest.fixture(scope="session")
def issuer() -> Iterator[MockIssuer]:
    """An identity provider on a loopback port: metadata, keys and token minting."""
    with MockIssuer() as mock:
        yield mock


@pytest.fixture
def settings(issuer: MockIssuer, tmp_path: Path) -> Settings:
    """Production-mode settings against the mock issuer, with a throw-away instance folder."""
    return Settings.from_mapping(
        {
            "MCP_RESOURCE_URL": RESOURCE,
            "MCP_ISSUER": issuer.issuer,
            "MCP_SCOPES_SUPPORTED": "todo:read todo:write",
            "MCP_INSTANCE_PATH": str(tmp_path / "instance"),
        }
    )


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    """The application under test."""
    application = create_app(settings)
    yield application
    stop_worker(application)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client for the app."""
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """A test runner for the app's Click commands."""
    return app.test_cli_runner()


class Tokens:
    """Mints tokens for this resource from the mock issuer."""

    def __init__(self, issuer: MockIssuer, audience: str) -> None:
        self.issuer = issuer
        self.audience = audience

    def mint(self, *scopes: str, **claims: object) -> str:
        return self.issuer.mint(claims.pop("aud", self.audience), scopes=scopes, **claims)  # type: ignore[arg-type]

    def header(self, *scopes: str, **claims: object) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.mint(*scopes, **claims)}


@pytest.fixture
def tokens(issuer: MockIssuer) -> Tokens:
    return Tokens(issuer, RESOURCE)
