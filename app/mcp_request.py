"""What this MCP POST asks for, read once from its JSON-RPC body.

The authentication hook needs the called tool before the SDK runs (to answer
403 with the scopes it requires); logging and metrics need the method and tool
after. They all read the same parse (:func:`app.mcp_calls.parse`), cached on
``flask.g``.
"""

from __future__ import annotations

from flask import g
from flask import request

from app.mcp_calls import MCPRequest
from app.mcp_calls import parse


def current_mcp_request() -> MCPRequest:
    """The parse of this request's body (empty for anything but a POST), computed once."""
    parsed: MCPRequest | None = g.get("mcp_request")
    if parsed is None:
        parsed = parse(request.get_data(cache=True)) if request.method == "POST" else MCPRequest()
        g.mcp_request = parsed
    return parsed
