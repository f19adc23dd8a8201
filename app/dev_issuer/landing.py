"""The page a person sees on opening the server in a browser (development mode only).

Server name, the MCP URL, the discovery documents, each tool with the scopes
it needs, and the lines that connect Claude Code and MCP Inspector. The tool
list is read from the SDK server once, on the first visit, and kept.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from dataclasses import dataclass

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import make_response
from flask import render_template
from mcp.server.mcpserver import MCPServer

from app.auth import public
from app.auth.scopes import ScopePolicy
from app.dev_issuer.metadata import JWKS_PATH
from app.protected_resource import metadata_url
from app.settings import DEV_RESOURCE_URL
from app.settings import Settings


@dataclass(frozen=True)
class ToolRow:
    name: str
    description: str
    scopes: tuple[str, ...]


def _tool_rows(server: MCPServer, policy: ScopePolicy) -> list[ToolRow]:
    # A private loop: the request thread's own (the bridge's) is neither touched nor replaced.
    loop = asyncio.new_event_loop()
    try:
        tools = loop.run_until_complete(server.list_tools())
    finally:
        loop.close()
    return [
        ToolRow(
            name=tool.name,
            description=(tool.description or "").strip().splitlines()[0] if tool.description else "",
            scopes=tuple(sorted(policy.required_for_tool(tool.name))),
        )
        for tool in tools
    ]


def client_name(settings: Settings) -> str:
    """The server's name as MCP clients list it (``claude mcp add <name>``): MCP_RESOURCE_NAME as a slug."""
    return re.sub(r"[^a-z0-9]+", "-", settings.resource_name.lower()).strip("-") or "mcp-server"


def token_command(settings: Settings) -> str:
    """The command that prints a token for this very server: same resource URL, so the same issuer and audience."""
    environment = "MCP_DEV=1"
    if settings.resource_url != DEV_RESOURCE_URL:
        environment += f" MCP_RESOURCE_URL={shlex.quote(settings.resource_url)}"
    scopes = shlex.quote(" ".join(settings.scopes_supported))
    return f"{environment} .venv/bin/flask --app wsgi mcp token --sub alice" + (
        f" --scope {scopes}" if settings.scopes_supported else ""
    )


def init_app(app: Flask, settings: Settings, server: MCPServer, policy: ScopePolicy, as_metadata_url: str) -> None:
    blueprint = Blueprint("landing", __name__)
    cache: dict[str, list[ToolRow]] = {}
    connect = {"client_name": client_name(settings), "token_command": token_command(settings)}
    links = {
        "Protected resource metadata (RFC 9728)": metadata_url(settings),
        "Authorization server metadata (RFC 8414)": as_metadata_url,
        "Signing keys (JWK Set)": settings.public_origin + JWKS_PATH,
    }

    @blueprint.get("/")
    @public
    def landing() -> Response:
        rows = cache.get("tools")
        if rows is None:
            # Two first visits at once both build the list; either result is the same.
            rows = cache["tools"] = _tool_rows(server, policy)
        page = render_template("dev_issuer/landing.html", settings=settings, tools=rows, links=links, **connect)
        response = make_response(page)
        response.headers["Cache-Control"] = "no-cache"
        return response

    app.register_blueprint(blueprint)
