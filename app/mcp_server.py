"""The MCP server itself: the SDK's ``MCPServer``, with a scope declaration beside each tool.

Tools are plain SDK tools. :class:`ScopedServer` only adds ``scopes=`` to the
decorator and records it in the :class:`ScopePolicy` that the authentication
hook consults before the SDK runs.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from typing import Any
from typing import TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.request_state import RequestStateSecurity

from app.auth.scopes import ScopePolicy

F = TypeVar("F", bound=Callable[..., Any])

SERVER_NAME = "flask-mcp-server"
INSTRUCTIONS = (
    "Tools of a small todo list that belongs to the signed-in user, plus whoami, greet_user "
    "and count_to (which reports progress while it counts)."
)


class ScopedServer:
    """Registers SDK tools together with the OAuth scopes each one requires."""

    def __init__(self, mcp: MCPServer, policy: ScopePolicy) -> None:
        self.mcp = mcp
        self.policy = policy

    def describe_scopes(self, descriptions: dict[str, str]) -> None:
        """One line per scope saying what it lets a client do, for consent pages."""
        for scope, description in descriptions.items():
            self.policy.describe(scope, description)

    def tool(self, *, scopes: Iterable[str] = (), name: str | None = None, **options: Any) -> Callable[[F], F]:
        """Like ``MCPServer.tool()``; ``scopes`` are all required to call the tool."""

        def decorator(fn: F) -> F:
            self.policy.require_for_tool(name or fn.__name__, scopes)
            return self.mcp.tool(name=name, **options)(fn)

        return decorator


def create_mcp_server(*, state_secret: str | None) -> MCPServer:
    """The SDK server; request state is sealed with the shared secret when there is one.

    With several worker processes a 2026-07-28 multi-round-trip retry can land
    on another worker, which must be able to open the state the first sealed.
    """
    security = RequestStateSecurity(keys=[state_secret]) if state_secret else None
    return MCPServer(SERVER_NAME, instructions=INSTRUCTIONS, request_state_security=security)
