"""The SDK's JSON path for requests whose answer can only be one JSON body, and only for those.

The bridge sends list methods, and calls of sync tools, prompts and resources
without a ``Context`` parameter, to a second session manager in JSON-response
mode. Everything that may stream keeps the configured Server-Sent Events path;
a client that does not accept SSE is refused alike on both.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from flask import Flask
from mcp.server.mcpserver import MCPServer

from app import create_app
from app import stop_worker
from app.auth.scopes import ScopePolicy
from app.mcp_server import ScopedServer
from app.provider import Context
from app.settings import Settings
from tests.conftest import Tokens
from tests.support.jsonrpc import ACCEPT
from tests.support.jsonrpc import HANDSHAKE
from tests.support.jsonrpc import MODERN
from tests.support.jsonrpc import call_tool
from tests.support.jsonrpc import messages
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers


def tools(server: ScopedServer) -> None:
    @server.tool()
    def plain(text: str) -> str:
        return text.upper()

    @server.tool()
    def with_context(ctx: Context) -> str:
        return "ctx"

    @server.tool()
    async def reporting(ctx: Context) -> str:
        await ctx.report_progress(1, 2, "half")
        await ctx.report_progress(2, 2, "all")
        return "reported"

    @server.tool()
    async def awaiting() -> str:
        await asyncio.sleep(0)
        return "awaited"

    @server.prompt()
    def greeting() -> str:
        return "hello"

    @server.resource("note://fixed")
    def fixed() -> str:
        return "fixed"

    @server.resource("note://{id}")
    def templated(id: str) -> str:
        return id


def test_what_is_answered_at_once() -> None:
    server = ScopedServer(MCPServer("t"), ScopePolicy(), instance_path="/srv")
    tools(server)
    assert server.answered_at_once() == {
        "tools/call": frozenset({"plain"}),
        "prompts/get": frozenset({"greeting"}),
        "resources/read": frozenset({"note://fixed"}),
    }
    stateful = ScopedServer(MCPServer("t"), ScopePolicy(), sync_in_request_thread=False, instance_path="/srv")
    tools(stateful)
    assert stateful.answered_at_once() == {}


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    application = create_app(settings, register_tools=tools)
    yield application
    stop_worker(application)


def post(app: Flask, headers: dict[str, str], body: bytes) -> tuple[int, str | None, bytes]:
    response = app.test_client().post("/mcp", headers=headers, data=body)
    data = response.get_data()
    response.close()
    return response.status_code, response.headers.get("Content-Type"), data


@pytest.mark.parametrize("era", [MODERN, HANDSHAKE])
def test_a_plain_sync_tool_is_answered_as_json(app: Flask, tokens: Tokens, era: str) -> None:
    status, content_type, body = post(app, *call_tool("plain", {"text": "hi"}, era=era, token=tokens.mint()))
    assert (status, content_type) == (200, "application/json")
    [answer] = messages(content_type, body)
    assert answer["result"]["content"] == [{"type": "text", "text": "HI"}]


@pytest.mark.parametrize("era", [MODERN, HANDSHAKE])
def test_a_tool_that_reports_progress_streams_it(app: Flask, tokens: Tokens, era: str) -> None:
    headers, body = call_tool("reporting", era=era, token=tokens.mint())
    request = request_body("tools/call", {"name": "reporting", "arguments": {}, "_meta": {"progressToken": 7}}, era=era)
    status, content_type, data = post(app, headers, json.dumps(request).encode())
    assert (status, content_type) == (200, "text/event-stream")
    progress = [m["params"]["progress"] for m in messages(content_type, data) if m.get("method")]
    assert progress == [1, 2]


@pytest.mark.parametrize("tool", ["with_context", "awaiting"])
def test_tools_that_could_stream_keep_the_event_stream_in_the_handshake_era(
    app: Flask, tokens: Tokens, tool: str
) -> None:
    status, content_type, _ = post(app, *call_tool(tool, era=HANDSHAKE, token=tokens.mint()))
    assert (status, content_type) == (200, "text/event-stream")


def test_the_modern_list_answer_is_byte_for_byte_the_sse_paths(app: Flask, tokens: Tokens) -> None:
    """In the 2026-07-28 era the SDK answers a silent handler with the same JSON whichever way it is asked."""
    headers = request_headers("tools/list", token=tokens.mint())
    body = json.dumps(request_body("tools/list")).encode()
    bridge = app.extensions["mcp_bridge"]
    through_json_path = post(app, headers, body)
    bridge.single_answer_path = False
    try:
        through_sse_path = post(app, headers, body)
    finally:
        bridge.single_answer_path = True
    assert through_json_path == through_sse_path
    assert through_json_path[1] == "application/json"


@pytest.mark.parametrize("era", [MODERN, HANDSHAKE])
@pytest.mark.parametrize("method", ["tools/list", "tools/call"])
def test_a_client_that_does_not_accept_events_is_refused_on_both_paths(
    app: Flask, tokens: Tokens, era: str, method: str
) -> None:
    params = {"name": "plain", "arguments": {"text": "x"}} if method == "tools/call" else {}
    headers = request_headers(method, "plain" if method == "tools/call" else None, era=era, token=tokens.mint())
    headers["Accept"] = "application/json"
    assert ACCEPT != headers["Accept"]
    status, _, _ = post(app, headers, json.dumps(request_body(method, params, era=era)).encode())
    assert status == 406
