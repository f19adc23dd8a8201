"""What a tool provider imports: everything the server offers to code that defines tools, resources and prompts.

A provider is a function that takes the server and registers SDK primitives
with the scopes each one needs; MCP_TOOLS names it (see
:mod:`app.tool_providers`)::

    from app.provider import ScopedServer, current_principal

    def register(server: ScopedServer) -> None:
        @server.tool(scopes=["notes:read"])
        def read_notes() -> list[str]:
            return load_notes(current_principal().key)

The functions themselves are plain MCP SDK ones, and the SDK's names a tool
needs are here too: take ``ctx: Context`` to report progress; raise
``ToolError`` for a failure the model should read (any other exception is a
crash: the model sees only "Error executing tool <name>"), ``ResourceNotFoundError``
or ``ResourceError`` from a resource. This module is the stable surface; the
rest of ``app`` is the server's own business.
"""

from __future__ import annotations

from collections.abc import Callable

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.server.mcpserver.exceptions import ToolError

from app.auth.principal import Principal
from app.bridge.auth_context import NoAuthenticatedCaller
from app.bridge.auth_context import current_principal
from app.mcp_server import ScopedServer

__all__ = [
    # types
    "Context",
    "Principal",
    "Provider",
    "ScopedServer",
    # errors
    "NoAuthenticatedCaller",
    "ResourceError",
    "ResourceNotFoundError",
    "ToolError",
    # functions
    "current_principal",
]

#: A tool provider: called once per process at start, with the server to register on.
Provider = Callable[[ScopedServer], None]
