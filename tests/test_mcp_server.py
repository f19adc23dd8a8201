"""ScopedServer: what a provider registers, with its scopes and provider, runs as the SDK would run it, only closer."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from flask import Flask
from mcp.server.mcpserver import MCPServer

from app import create_app
from app import stop_worker
from app.auth.scopes import ScopePolicy
from app.mcp_server import Registration
from app.mcp_server import ScopedServer
from app.provider import Context
from app.settings import Settings
from app.settings import SettingsError
from tests.conftest import Tokens
from tests.support.jsonrpc import HANDSHAKE
from tests.support.jsonrpc import MODERN
from tests.support.jsonrpc import call_tool
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers
from tests.support.jsonrpc import result_of

SEEN: list[tuple[str, int]] = []


def where_am_i(server: ScopedServer) -> None:
    """A provider with a sync and an async tool that note the thread they run in."""
    server.add_instructions("  First provider's instructions.  ")
    server.add_instructions("Second part.")

    @server.tool(scopes="probe:read probe:write")
    def sync_probe() -> str:
        SEEN.append(("sync", threading.get_ident()))
        return "sync"

    @server.tool(scopes=["probe:read"])
    async def async_probe(ctx: Context) -> str:
        SEEN.append(("async", threading.get_ident()))
        return "async"


@pytest.fixture
def probe_app(settings: Settings) -> Iterator[Flask]:
    SEEN.clear()
    application = create_app(settings, register_tools=where_am_i)
    yield application
    stop_worker(application)


def new_server(*, inline: bool = True) -> ScopedServer:
    return ScopedServer(MCPServer("t"), ScopePolicy(), sync_in_request_thread=inline, instance_path="/srv/instance")


class TestRegistration:
    def test_records_kind_name_scopes_provider_and_function(self) -> None:
        server = new_server()

        def greet() -> str:
            return "hi"

        def note(id: int) -> str:
            return ""

        with server.registering_for("notes_mcp:register"):
            server.tool(scopes=["notes:write", "notes:read"])(greet)
            server.resource("note://{id}", scopes="notes:read")(note)
        server.prompt()(greet)
        assert server.registrations == [
            Registration("tool", "greet", frozenset({"notes:read", "notes:write"}), "notes_mcp:register", greet),
            Registration("resource", "note://{id}", frozenset({"notes:read"}), "notes_mcp:register", note),
            Registration("prompt", "greet", frozenset(), "-", greet),
        ]
        assert server.required_scopes() == ["notes:read", "notes:write"]
        assert server.policy.required_for_tool("greet") == {"notes:read", "notes:write"}
        assert server.policy.required_for_resource("note://7") == {"notes:read"}

    def test_the_decorators_return_the_function_itself(self) -> None:
        server = new_server()

        def greet() -> str:
            return "hi"

        assert server.tool()(greet) is greet

    def test_development_scopes_default_to_every_required_scope(self) -> None:
        server = new_server()
        server.tool(scopes=["b:write", "a:read"], name="one")(lambda: "")
        server.tool(scopes=["c:read", "a:read"], name="two")(lambda: "")
        assert server.development_scopes() == ["a:read", "b:write", "c:read"]
        server.advertise_in_development("c:read a:read")
        server.advertise_in_development(["a:read", "b:write"])
        assert server.development_scopes() == ["c:read", "a:read", "b:write"]

    def test_imply_scopes(self) -> None:
        server = new_server()
        server.imply_scopes({"notes:admin": "notes:write notes:read", "notes:write": ["notes:read"]})
        assert server.policy.expand(["notes:admin"]) == {"notes:admin", "notes:write", "notes:read"}
        with pytest.raises(SettingsError) as caught:
            server.imply_scopes({"notes:admin notes:owner": ["notes:read"]})
        assert str(caught.value) == (
            "MCP_TOOLS: 'notes:admin notes:owner' is not one valid scope token (RFC 6749 section 3.3)"
        )

    def test_instance_path_and_environment_are_the_providers_to_read(self) -> None:
        server = ScopedServer(MCPServer("t"), ScopePolicy(), instance_path="/srv/i", env={"NOTES_DATABASE": "/x"})
        assert (server.instance_path, dict(server.env)) == ("/srv/i", {"NOTES_DATABASE": "/x"})
        with pytest.raises(TypeError):
            server.env["NOTES_DATABASE"] = "/y"  # type: ignore[index]


class TestRunningTheTools:
    def test_stateless_sync_tools_run_in_the_request_thread(self, probe_app: Flask, tokens: Tokens) -> None:
        """The bridge gives every request its own event loop, driven by the request's thread: no hop to a worker."""
        token = tokens.mint("probe:read", "probe:write")
        for name in ("sync_probe", "async_probe"):
            headers, body = call_tool(name, token=token)
            response = probe_app.test_client().post("/mcp", headers=headers, data=body)
            response.close()
            assert result_of(response.content_type, response.get_data())["result"]["content"][0]["text"] == name[:-6]
        assert SEEN == [("sync", threading.get_ident()), ("async", threading.get_ident())]

    def test_stateful_sync_tools_stay_off_the_shared_loop(self) -> None:
        server = new_server(inline=False)

        def blocking() -> str:
            return ""

        server.tool()(blocking)
        # Registered as it is, so the SDK runs it in a worker thread and the loop serving every session never blocks.
        assert server.mcp._tool_manager.get_tool("blocking").fn is blocking

    def test_scopes_are_checked_before_the_tool_runs(self, probe_app: Flask, tokens: Tokens) -> None:
        headers, body = call_tool("sync_probe", token=tokens.mint("probe:read"))
        response = probe_app.test_client().post("/mcp", headers=headers, data=body)
        assert response.status_code == 403
        assert response.headers["WWW-Authenticate"] == (
            'Bearer error="insufficient_scope", error_description="This call requires the scopes: probe:read '
            'probe:write", scope="probe:read probe:write", '
            'resource_metadata="http://localhost/.well-known/oauth-protected-resource/mcp"'
        )
        assert SEEN == []

    @pytest.mark.parametrize("era", [MODERN, HANDSHAKE])
    def test_the_providers_instructions_reach_the_client(self, probe_app: Flask, tokens: Tokens, era: str) -> None:
        if era == MODERN:
            method, params = "server/discover", {}
        else:
            method = "initialize"
            params = {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        response = probe_app.test_client().post(
            "/mcp",
            headers=request_headers(method, era=era, token=tokens.mint()),
            data=json.dumps(request_body(method, params, era=era)),
        )
        response.close()
        result = result_of(response.content_type, response.get_data())["result"]
        assert result["instructions"] == "First provider's instructions.\n\nSecond part."
