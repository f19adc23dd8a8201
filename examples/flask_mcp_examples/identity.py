"""Tools about the caller: who the token says they are."""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import Field

from app.provider import ScopedServer
from app.provider import ToolError
from app.provider import current_principal


def register(server: ScopedServer) -> None:
    @server.tool(structured_output=False)
    def whoami() -> str:
        """Who is calling: subject, client, scopes, issuer, organization and token expiry."""
        return json.dumps(current_principal().public_view())

    @server.tool()
    def greet_user(name: Annotated[str, Field(description="The name to greet", max_length=100)]) -> str:
        """Greet someone by name."""
        name = name.strip()
        if not name:
            raise ToolError("name must not be empty")
        return f"Hello, {name}!"
