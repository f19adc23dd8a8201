"""flask mcp doctor: the mismatches operators lose days to, named."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from app import create_app
from app import stop_worker
from app.settings import Settings
from tests.conftest import RESOURCE
from tests.support.issuer import MockIssuer


@pytest.fixture
def make(issuer: MockIssuer, tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    apps: list[Flask] = []

    def build(**env: str) -> Flask:
        settings = {"MCP_RESOURCE_URL": RESOURCE, "MCP_ISSUER": issuer.issuer, "MCP_INSTANCE_PATH": str(tmp_path)}
        app = create_app(Settings.from_mapping({**settings, **env}))
        apps.append(app)
        return app

    yield build
    for app in apps:
        stop_worker(app)


def doctor(app: Flask, *args: str) -> tuple[int, list[str]]:
    result = app.test_cli_runner().invoke(args=["mcp", "doctor", *args])
    return result.exit_code, [line.strip() for line in result.output.splitlines()]


def test_a_healthy_setup_and_token(make, issuer: MockIssuer) -> None:  # type: ignore[no-untyped-def]
    code, lines = doctor(make(), "--token", issuer.mint(RESOURCE, scopes=["todo:read"]))
    assert code == 0
    assert f"ok  the resource URL {RESOURCE} is an accepted audience" in lines
    assert f"ok  metadata at {issuer.issuer}/.well-known/oauth-authorization-server" in lines
    assert "ok  this server accepts the token: sub 'alice', scopes ['todo:read']" in lines
    assert lines[-1] == "no problems found"


@pytest.mark.parametrize(
    ("mode", "code", "line"),
    [
        pytest.param(
            "allowed",
            0,
            "the token is DPoP-bound (cnf.jkt abc): it is accepted only with the DPoP scheme and a proof from that key",
            id="allowed",
        ),
        pytest.param(
            "off",
            1,
            "FAIL  the token is DPoP-bound (cnf.jkt abc): it is accepted only with the DPoP scheme and a proof from "
            "that key, which MCP_DPOP=off refuses",
            id="off",
        ),
    ],
)
def test_a_dpop_bound_token(make, issuer: MockIssuer, mode: str, code: int, line: str) -> None:  # type: ignore[no-untyped-def]
    exit_code, lines = doctor(make(MCP_DPOP=mode), "--token", issuer.mint(RESOURCE, cnf={"jkt": "abc"}))
    assert exit_code == code
    assert line in lines


def test_issuer_that_differs_by_a_trailing_slash(make, issuer: MockIssuer) -> None:  # type: ignore[no-untyped-def]
    code, lines = doctor(make(MCP_ISSUER=issuer.issuer + "/"))
    assert code == 1
    url = f"{issuer.issuer}/.well-known/oauth-authorization-server"
    assert (
        f"FAIL  {url} names issuer {issuer.issuer!r}, not {issuer.issuer + '/'!r}: the tokens' iss must equal "
        "MCP_ISSUER exactly (a trailing slash counts)"
    ) in lines


def test_audience_near_miss(make) -> None:  # type: ignore[no-untyped-def]
    code, lines = doctor(make(MCP_AUDIENCE="http://LOCALHOST/mcp/"))
    assert code == 2
    assert (
        "WARN  audience 'http://LOCALHOST/mcp/' differs from MCP_RESOURCE_URL 'http://localhost/mcp' only by a "
        "trailing slash and the host's case: accepted, but clients send the resource URL as RFC 8707 resource, "
        "so make the provider use exactly that"
    ) in lines


def test_a_token_taken_apart(make, issuer: MockIssuer) -> None:  # type: ignore[no-untyped-def]
    token = issuer.mint("https://other.example/mcp", iss=issuer.issuer + "/")
    code, lines = doctor(make(), "--token", token)
    assert code == 1
    assert (
        f"FAIL  iss {issuer.issuer + '/'!r} is not MCP_ISSUER {issuer.issuer!r} (they differ by a trailing slash)"
        in (lines)
    )
    assert "FAIL  this server refuses the token: The access token was issued by another issuer" in lines
    assert all(token not in line for line in lines)


def test_clock_skew(make, issuer: MockIssuer) -> None:  # type: ignore[no-untyped-def]
    issuer.clock_offset = -120
    try:
        code, lines = doctor(make())
    finally:
        issuer.clock_offset = 0
    assert code == 1
    assert any(line.startswith("FAIL  this clock is +12") and "beyond the 30 s leeway" in line for line in lines), lines


def test_keys_unreachable(make, issuer: MockIssuer) -> None:  # type: ignore[no-untyped-def]
    app = make()
    issuer.down = True
    try:
        code, lines = doctor(app)
    finally:
        issuer.down = False
    assert code == 1
    assert f"FAIL  no usable RFC 8414 or OpenID metadata for {issuer.issuer}: set MCP_JWKS_URI" in lines
