"""Stateful mode in-process (Flask's test client, the real loop thread): the URLs it serves, session ids with the
instance's name, and streams that resume only within their own session."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app import stop_worker
from app.settings import Settings
from tests.conftest import RESOURCE
from tests.conftest import Tokens
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import HANDSHAKE
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers

SESSION_NOT_FOUND = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Session not found"}}
INITIALIZE = request_body(
    "initialize",
    {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "unit", "version": "1"}},
    era=HANDSHAKE,
)


def stateful_app(issuer: MockIssuer, tmp_path: Path, **env: str) -> Flask:
    settings = Settings.from_mapping(
        {
            "MCP_RESOURCE_URL": RESOURCE,
            "MCP_ISSUER": issuer.issuer,
            "MCP_INSTANCE_PATH": str(tmp_path / "instance"),
            "MCP_STATEFUL": "1",
            **env,
        }
    )
    return create_app(settings)


@pytest.fixture
def named(issuer: MockIssuer, tmp_path: Path) -> Iterator[FlaskClient]:
    """Stateful, with the instance name "unit" in its session ids."""
    app = stateful_app(issuer, tmp_path, MCP_INSTANCE_NAME="unit")
    yield app.test_client()
    stop_worker(app)


def events(body: bytes) -> list[dict[str, str]]:
    found = []
    for block in body.decode().replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) if ": " in line else (line.rstrip(":"), "") for line in block.splitlines())
        if fields and not block.startswith(":"):
            found.append(fields)
    return found


def open_session(client: FlaskClient, token: str) -> str:
    opened = client.post("/mcp", headers=request_headers("initialize", era=HANDSHAKE, token=token), json=INITIALIZE)
    assert opened.status_code == 200
    session: str = opened.headers["Mcp-Session-Id"]
    headers = {**request_headers("notifications/initialized", era=HANDSHAKE, token=token), "Mcp-Session-Id": session}
    notified = client.post("/mcp", headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert notified.status_code == 202
    return session


def call_count_to(client: FlaskClient, token: str, session: str, n: int) -> list[dict[str, str]]:
    headers = {**request_headers("tools/call", era=HANDSHAKE, token=token), "Mcp-Session-Id": session}
    body = request_body(
        "tools/call", {"name": "count_to", "arguments": {"n": n}, "_meta": {"progressToken": 1}}, era=HANDSHAKE, id=2
    )
    response = client.post("/mcp", headers=headers, json=body)
    assert response.status_code == 200
    return events(response.data)


def test_session_ids_carry_the_instance_name(named: FlaskClient, tokens: Tokens) -> None:
    token = tokens.mint()
    session = open_session(named, token)
    name, dot, sdk_id = session.partition(".")
    assert (name, dot, len(sdk_id), set(sdk_id) <= set("0123456789abcdef")) == ("unit", ".", 32, True)
    listed = named.post(
        "/mcp",
        headers={**request_headers("tools/list", era=HANDSHAKE, token=token), "Mcp-Session-Id": session},
        json=request_body("tools/list", era=HANDSHAKE, id=3),
    )
    assert listed.status_code == 200
    assert listed.headers["Mcp-Session-Id"] == session


@pytest.mark.parametrize("forged", ["other.{sdk}", "{sdk}", "unit.", "unit.{sdk}x", "0" * 32])
def test_a_session_id_this_instance_did_not_hand_out_is_an_unknown_session(
    named: FlaskClient, tokens: Tokens, forged: str
) -> None:
    token = tokens.mint()
    sdk_id = open_session(named, token).partition(".")[2]
    headers = {**request_headers("tools/list", era=HANDSHAKE, token=token), "Mcp-Session-Id": forged.format(sdk=sdk_id)}
    refused = named.post("/mcp", headers=headers, json=request_body("tools/list", era=HANDSHAKE, id=3))
    assert (refused.status_code, refused.json) == (404, SESSION_NOT_FOUND)


def test_a_dropped_stream_resumes_from_its_last_event(named: FlaskClient, tokens: Tokens) -> None:
    token = tokens.mint()
    session = open_session(named, token)
    priming, *rest = call_count_to(named, token, session, 3)
    assert (priming["data"], priming["retry"]) == ("", "1000")
    assert [json.loads(event["data"]).get("method") for event in rest] == ["notifications/progress"] * 3 + [None]
    # As if the client had seen only the first progress event before its connection dropped.
    headers = {
        **request_headers("tools/call", era=HANDSHAKE, token=token),
        "Mcp-Session-Id": session,
        "Accept": "text/event-stream",
        "Last-Event-ID": rest[0]["id"],
    }
    resumed = named.get("/mcp", headers=headers, buffered=False)
    assert resumed.status_code == 200
    assert resumed.headers["Content-Type"].startswith("text/event-stream")
    # The stream stays open for whatever the request might still send (the SDK's live tail): read up to
    # the result, then hang up as a client does.
    received = b""
    for chunk in resumed.response:
        received += chunk
        if b'"result"' in received:
            break
    resumed.close()
    replayed = [event for event in events(received) if event.get("data")]
    assert [event["id"] for event in replayed] == [event["id"] for event in rest[1:]]
    assert json.loads(replayed[-1]["data"])["result"]["content"] == [{"type": "text", "text": "Counted to 3."}]


def test_another_sessions_event_id_replays_nothing(named: FlaskClient, tokens: Tokens) -> None:
    token = tokens.mint(sub="same-user-two-sessions")
    first, second = open_session(named, token), open_session(named, token)
    _, progress, *_ = call_count_to(named, token, first, 2)
    headers = {
        **request_headers("tools/call", era=HANDSHAKE, token=token),
        "Mcp-Session-Id": second,
        "Accept": "text/event-stream",
        "Last-Event-ID": progress["id"],
    }
    other = named.get("/mcp", headers=headers)
    assert other.status_code == 200
    assert [event for event in events(other.data) if event.get("data")] == []


def test_the_legacy_sse_urls_exist_only_with_mcp_legacy_sse(named: FlaskClient, tokens: Tokens) -> None:
    for path in ("/mcp/sse", "/mcp/messages/?session_id=unit." + "0" * 32):
        response = named.open(path, method="GET" if path.endswith("sse") else "POST", headers=tokens.header())
        assert response.status_code == 404, path


def test_stateless_requests_never_touch_the_stateful_transports(app: Flask) -> None:
    assert app.extensions["mcp_bridge"].stateful_transports is None
    assert not [rule.rule for rule in app.url_map.iter_rules() if rule.rule.startswith(("/mcp/sse", "/mcp/messages"))]


def test_the_event_store_can_be_off(issuer: MockIssuer, tmp_path: Path, tokens: Tokens) -> None:
    app = stateful_app(issuer, tmp_path, MCP_EVENT_STORE="off")
    try:
        client = app.test_client()
        token = tokens.mint()
        session = open_session(client, token)
        assert "." not in session
        answered = call_count_to(client, token, session, 2)
    finally:
        stop_worker(app)
    # No store: no priming event, no event ids, nothing to resume from.
    assert [("id" in event, json.loads(event["data"]).get("method")) for event in answered] == [
        (False, "notifications/progress"),
        (False, "notifications/progress"),
        (False, None),
    ]
