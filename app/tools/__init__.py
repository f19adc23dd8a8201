"""The example tools: one module per domain, each tool declaring its scopes where it is defined."""

from __future__ import annotations

from app.mcp_server import ScopedServer
from app.tools import counting
from app.tools import identity
from app.tools import todos


def register_all(server: ScopedServer, database: str) -> None:
    identity.register(server)
    todos.register(server, todos.TodoStore(database))
    counting.register(server)
