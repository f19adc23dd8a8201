"""At least 40 bad tokens, each refused with the right status and challenge: never a 500, never a tool result."""

from __future__ import annotations

import json

import pytest
from flask import Flask

from app import create_app
from app import stop_worker
from app.settings import Settings
from tests.conftest import RESOURCE
from tests.security.tokens import BAD_TOKENS
from tests.security.tokens import BadToken
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import call_tool

METADATA = "http://localhost/.well-known/oauth-protected-resource/mcp"


def test_the_battery_is_big_enough() -> None:
    assert len({bad.name for bad in BAD_TOKENS}) >= 40


@pytest.fixture(scope="module")
def strict_app(issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory) -> Flask:
    settings = Settings.from_mapping(
        {
            "MCP_RESOURCE_URL": RESOURCE,
            "MCP_ISSUER": issuer.issuer,
            "MCP_TOKEN_PROFILE": "jwt",
            "MCP_RATE_LIMIT": "off",
            "MCP_INSTANCE_PATH": str(tmp_path_factory.mktemp("battery")),
        }
    )
    app = create_app(settings)
    yield app
    stop_worker(app)


@pytest.mark.parametrize("bad", BAD_TOKENS, ids=[bad.name for bad in BAD_TOKENS])
def test_refused(strict_app: Flask, issuer: MockIssuer, bad: BadToken) -> None:
    token = bad.build(issuer, RESOURCE)
    headers, body = call_tool("whoami", token=token)
    response = strict_app.test_client().post("/mcp", headers=headers, data=body)
    assert response.status_code == bad.status
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer error="{bad.error}", error_description="{bad.description}", resource_metadata="{METADATA}"'
    )
    assert response.get_json() == {"error": bad.error, "error_description": bad.description}
    assert "result" not in response.get_data(as_text=True)
    assert token not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("header", "description"),
    [
        pytest.param({"typ": "JWT"}, "The access token has the wrong type (typ)", id="typ JWT"),
        pytest.param({"typ": None}, "The access token has the wrong type (typ)", id="no typ"),
    ],
)
def test_the_strict_profile_refuses_what_the_lenient_one_accepts(
    issuer: MockIssuer, tmp_path, header: dict[str, object], description: str
) -> None:  # type: ignore[no-untyped-def]
    token = issuer.mint(RESOURCE, header=header)
    results = []
    for profile in ("jwt", "rfc9068"):
        settings = Settings.from_mapping(
            {
                "MCP_RESOURCE_URL": RESOURCE,
                "MCP_ISSUER": issuer.issuer,
                "MCP_TOKEN_PROFILE": profile,
                "MCP_INSTANCE_PATH": str(tmp_path / profile),
            }
        )
        app = create_app(settings)
        headers, body = call_tool("whoami", token=token)
        response = app.test_client().post("/mcp", headers=headers, data=body)
        results.append((response.status_code, response.headers.get("WWW-Authenticate")))
        response.close()
        stop_worker(app)
    assert results == [
        (200, None),
        (401, f'Bearer error="invalid_token", error_description="{description}", resource_metadata="{METADATA}"'),
    ]


def test_a_good_token_still_works(strict_app: Flask, issuer: MockIssuer) -> None:
    headers, body = call_tool("whoami", token=issuer.mint(RESOURCE, sub="good"))
    response = strict_app.test_client().post("/mcp", headers=headers, data=body)
    assert response.status_code == 200
    assert json.loads(response.get_json()["result"]["content"][0]["text"])["sub"] == "good"
