"""The MCP server itself: the SDK's ``MCPServer``, with a scope declaration beside each primitive.

Tools, resources and prompts are plain SDK ones. :class:`ScopedServer` only
adds ``scopes=`` to the decorators and records it in the :class:`ScopePolicy`
that the authentication hook consults before the SDK runs.
"""

from __future__ import annotations

import functools
import inspect
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


def in_request_thread(fn: F) -> F:
    """Let the SDK call a sync function directly instead of through a worker thread.

    The SDK runs sync tools with ``anyio.to_thread.run_sync`` so they cannot
    block a shared event loop. Our stateless bridge gives every request an event
    loop of its own, driven by the request's own WSGI thread: a sync tool can
    simply run there, as a Flask view would, and skip two thread switches.
    The wrapper keeps the signature (``__wrapped__``) the SDK builds the schema from.
    """
    if inspect.iscoroutinefunction(fn):
        return fn

    @functools.wraps(fn)
    async def run_inline(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return run_inline  # type: ignore[return-value]


class ScopedServer:
    """Registers SDK tools together with the OAuth scopes each one requires."""

    def __init__(self, mcp: MCPServer, policy: ScopePolicy, *, sync_in_request_thread: bool = True) -> None:
        self.mcp = mcp
        self.policy = policy
        self._inline = sync_in_request_thread

    def _registered(self, fn: F) -> F:
        return in_request_thread(fn) if self._inline else fn

    def describe_scopes(self, descriptions: dict[str, str]) -> None:
        """One line per scope saying what it lets a client do, for consent pages."""
        for scope, description in descriptions.items():
            self.policy.describe(scope, description)

    def tool(self, *, scopes: Iterable[str] = (), name: str | None = None, **options: Any) -> Callable[[F], F]:
        """Like ``MCPServer.tool()``; ``scopes`` are all required to call the tool."""

        def decorator(fn: F) -> F:
            self.policy.require_for_tool(name or fn.__name__, scopes)
            self.mcp.tool(name=name, **options)(self._registered(fn))
            return fn

        return decorator

    def resource(self, uri: str, *, scopes: Iterable[str] = (), **options: Any) -> Callable[[F], F]:
        """Like ``MCPServer.resource()``; ``scopes`` are all required to read it (templates included)."""

        def decorator(fn: F) -> F:
            self.policy.require_for_resource(uri, scopes)
            self.mcp.resource(uri, **options)(self._registered(fn))
            return fn

        return decorator

    def prompt(self, *, scopes: Iterable[str] = (), name: str | None = None, **options: Any) -> Callable[[F], F]:
        """Like ``MCPServer.prompt()``; ``scopes`` are all required to get the prompt."""

        def decorator(fn: F) -> F:
            self.policy.require_for_prompt(name or fn.__name__, scopes)
            self.mcp.prompt(name=name, **options)(self._registered(fn))
            return fn

        return decorator


def create_mcp_server(*, state_secret: str | None) -> MCPServer:
    """The SDK server; request state is sealed with the shared secret when there is one.

    With several worker processes a 2026-07-28 multi-round-trip retry can land
    on another worker, which must be able to open the state the first sealed.
    """
    security = RequestStateSecurity(keys=[state_secret]) if state_secret else None
    return MCPServer(SERVER_NAME, instructions=INSTRUCTIONS, request_state_security=security)
