"""The example tools, resources and prompts: a tool provider in a package of its own, like yours would be.

Installed from the repository's ``examples/`` folder (``make install`` does it).
The server runs it when MCP_TOOLS is unset and no other provider is installed,
or when MCP_TOOLS names ``flask_mcp_examples:register``. It imports nothing
but :mod:`app.provider`, pydantic and anyio.

Its own setting: MCP_DATABASE, the SQLite file of the todo list (default
``todos.sqlite3`` in the instance folder).
"""

from __future__ import annotations

import os

from app.provider import ScopedServer
from flask_mcp_examples import counting
from flask_mcp_examples import identity
from flask_mcp_examples import todos

__all__ = ["INSTRUCTIONS", "register"]

INSTRUCTIONS = (
    "Tools of a small todo list that belongs to the signed-in user, plus whoami, greet_user "
    "and count_to (which reports progress while it counts)."
)


def register(server: ScopedServer) -> None:
    server.add_instructions(INSTRUCTIONS)
    identity.register(server)
    database = server.env.get("MCP_DATABASE", "").strip() or os.path.join(server.instance_path, "todos.sqlite3")
    todos.register(server, todos.TodoStore(database))
    counting.register(server)
