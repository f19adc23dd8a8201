"""Every refusal the app answers comes from the one error tree (app.errors): a walk over every route.

The tree's renderer is watched while each route is sent what it refuses (no
token, a method it does not take, a foreign Origin or Host, and each refusal a
part of the app has of its own); every 4xx or 5xx answer must be byte for byte
one the tree rendered, with exactly the members ``error`` and
``error_description``. A part that built its own refusal again would fail here.
The development issuer's OAuth endpoints answer through Authlib's own
``OAuth2Error`` tree and are walked only where this app answers for them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import pytest
from flask import Flask
from flask import Response
from werkzeug.test import TestResponse

from app import create_app
from app import stop_worker
from app.errors import JSONError
from app.settings import Settings
from tests.conftest import RESOURCE
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers

METRICS_TOKEN = "metrics-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
# Answered by Authlib's own error tree (RFC 6749 / RFC 7591 errors), not this app's.
AUTHLIB_ENDPOINTS = frozenset({"dev_issuer.authorize", "dev_issuer.token", "dev_issuer.register"})
ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass
class Rendered:
    """What the tree's renderer produced in this test: (status, body) pairs, and the error classes."""

    answers: set[tuple[int, bytes]] = field(default_factory=set)
    classes: set[str] = field(default_factory=set)


@pytest.fixture
def rendered(monkeypatch: pytest.MonkeyPatch) -> Rendered:
    seen = Rendered()
    render = JSONError.response

    def watched(self: JSONError, headers: object = ()) -> Response:
        response = render(self, headers)  # type: ignore[arg-type]
        seen.answers.add((response.status_code, response.get_data()))
        seen.classes.add(type(self).__name__)
        return response

    monkeypatch.setattr(JSONError, "response", watched)
    return seen


def from_the_tree(response: TestResponse, rendered: Rendered) -> None:
    body = response.get_data()
    assert response.status_code >= 400, (response.status_code, body)
    assert response.mimetype == "application/json", (response.status_code, body)
    assert set(json.loads(body)) == {"error", "error_description"}, body
    assert (response.status_code, body) in rendered.answers, (
        f"not rendered by app.errors: {response.status_code} {body!r}"
    )


def make(tmp_path: Path, **env: str) -> Flask:
    return create_app(Settings.from_mapping({"MCP_RESOURCE_URL": RESOURCE, "MCP_INSTANCE_PATH": str(tmp_path), **env}))


@pytest.fixture
def production(issuer: MockIssuer, tmp_path: Path) -> Iterator[Flask]:
    app = make(tmp_path, MCP_ISSUER=issuer.issuer, MCP_AS_METADATA_PROXY="1")
    yield app
    stop_worker(app)


@pytest.fixture
def development(tmp_path: Path) -> Iterator[Flask]:
    app = create_app(Settings.from_mapping({"MCP_DEV": "1", "MCP_INSTANCE_PATH": str(tmp_path)}))
    yield app
    stop_worker(app)


def walk(app: Flask, base_url: str, rendered: Rendered, token: str | None = None) -> int:
    """Every route, without a token and with every method it does not take; returns how many refusals were seen."""
    client = app.test_client()
    seen = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint in AUTHLIB_ENDPOINTS or rule.endpoint == "static" or "<" in rule.rule:
            continue
        public = getattr(app.view_functions[rule.endpoint], "_public", False)
        for method in ALL_METHODS:
            allowed = method in (rule.methods or set())
            if allowed and public:
                continue
            headers = {"Authorization": f"Bearer {token}"} if token is not None and not allowed else {}
            response = client.open(rule.rule, method=method, base_url=base_url, headers=headers)
            response.close()
            from_the_tree(response, rendered)
            seen += 1
    return seen


def test_every_route_refuses_through_the_tree(production: Flask, rendered: Rendered, issuer: MockIssuer) -> None:
    token = issuer.mint(RESOURCE)
    assert walk(production, "http://localhost", rendered) > 20
    assert walk(production, "http://localhost", rendered, token=token) > 20
    assert {"MissingToken", "HTTPError"} <= rendered.classes


def test_every_development_route_refuses_through_the_tree(development: Flask, rendered: Rendered) -> None:
    assert walk(development, "http://127.0.0.1:5000", rendered) > 10


def test_each_part_refuses_through_the_tree(
    production: Flask, rendered: Rendered, issuer: MockIssuer, tmp_path: Path
) -> None:
    client = production.test_client()
    token = issuer.mint(RESOURCE)
    refusals = [
        # app.auth: a bad token, too few scopes, a malformed header.
        client.post("/mcp", headers=request_headers("tools/list", token="not-a-jwt"), json=request_body("tools/list")),
        client.post("/mcp", headers={"Authorization": "Bearer"}, json=request_body("tools/list")),
        # app.transport_security: Origin, then Host.
        client.post("/mcp", headers={"Origin": "https://evil.example"}, json=request_body("tools/list")),
        client.post("/mcp", base_url="http://elsewhere.example", json=request_body("tools/list")),
        # app.bridge: a stateless server takes only POST.
        client.get("/mcp", headers={"Authorization": f"Bearer {token}"}),
        # app.metrics: only direct loopback requests.
        client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}),
        # werkzeug: an unknown path, a body over the limit.
        client.get("/nothing-here", headers={"Authorization": f"Bearer {token}"}),
        client.post("/mcp", headers=request_headers("tools/list", token=token), data=b"x" * (4 * 1024 * 1024 + 1)),
    ]
    # app.rate_limits: a third call in the minute.
    limited = make(tmp_path / "limited", MCP_ISSUER=issuer.issuer, MCP_RATE_LIMIT="2/minute")
    for _ in range(3):
        call = limited.test_client().post(
            "/mcp", headers=request_headers("tools/list", token=token), json=request_body("tools/list")
        )
    refusals.append(call)
    # app.auth.jwks and app.authorization_server_metadata: the issuer is down.
    issuer.down = True
    try:
        cold = make(tmp_path / "cold", MCP_ISSUER=issuer.issuer, MCP_AS_METADATA_PROXY="1")
        refusals.append(
            cold.test_client().post(
                "/mcp", headers=request_headers("tools/list", token=token), json=request_body("tools/list")
            )
        )
        refusals.append(cold.test_client().get("/.well-known/oauth-authorization-server"))
    finally:
        issuer.down = False
    # app.metrics with MCP_METRICS_TOKEN: a scrape without it.
    guarded = make(tmp_path / "guarded", MCP_ISSUER=issuer.issuer, MCP_METRICS_TOKEN=METRICS_TOKEN)
    refusals.append(guarded.test_client().get("/metrics"))
    try:
        statuses = []
        for response in refusals:
            response.close()
            from_the_tree(response, rendered)
            statuses.append(response.status_code)
        assert statuses == [401, 400, 403, 421, 405, 403, 404, 413, 429, 503, 503, 401]
    finally:
        for app in (limited, cold, guarded):
            stop_worker(app)


def test_development_refusals_come_from_the_tree(development: Flask, rendered: Rendered) -> None:
    client = development.test_client()
    refusals = [
        # app.transport_security in development mode: another port, another host.
        client.get("/", base_url="http://127.0.0.1:5077"),
        client.get("/", base_url="http://evil.example"),
        # app.dev_issuer: registration with a body that is not a JSON object.
        client.post(
            "/dev-issuer/register", base_url="http://127.0.0.1:5000", data="[]", content_type="application/json"
        ),
    ]
    for response in refusals:
        from_the_tree(response, rendered)
    assert [response.status_code for response in refusals] == [421, 421, 400]


def test_a_refusal_raised_in_a_view_is_rendered_by_the_handler(production: Flask, rendered: Rendered) -> None:
    from app.auth import public
    from app.errors import TemporarilyUnavailable

    @production.get("/busy")
    @public
    def busy() -> str:
        raise TemporarilyUnavailable("Busy", retry_after=7)

    response = production.test_client().get("/busy")
    from_the_tree(response, rendered)
    assert (response.status_code, response.get_json(), response.headers["Retry-After"]) == (
        503,
        {"error": "temporarily_unavailable", "error_description": "Busy"},
        "7",
    )
