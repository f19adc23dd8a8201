"""What an MCP POST asks for: the method and target of each JSON-RPC message in its body.

Plain data and a pure parse, with no Flask request binding, so that the parts
that judge a call (the scope policy in :mod:`app.auth.scopes`, the audit line)
can import them without the web layer. :mod:`app.mcp_request` binds the parse
to the current request. The names come from the body itself, never from the
``Mcp-Method``/``Mcp-Name`` headers alone: the handshake era has no such
headers, so trusting them would be a bypass. A body that does not parse yields
no calls; the SDK answers it with its own error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# The JSON-RPC param that names what a method acts on.
TARGET_PARAMS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


@dataclass(frozen=True)
class MCPCall:
    """One JSON-RPC message: its method and, for calls that name one, its target."""

    method: str
    target: str | None = None


@dataclass(frozen=True)
class MCPRequest:
    """Every message of one POST, in order (a batch has several; a body that does not parse, none)."""

    calls: tuple[MCPCall, ...] = ()

    @property
    def method(self) -> str | None:
        """The method of a single-message request (batches report none)."""
        return self.calls[0].method if len(self.calls) == 1 else None

    def targets(self, method: str) -> list[str]:
        return [call.target for call in self.calls if call.method == method and call.target is not None]


def parse(body: bytes) -> MCPRequest:
    try:
        message: Any = json.loads(body)
    except (ValueError, RecursionError):
        return MCPRequest()
    calls = []
    for item in message if isinstance(message, list) else [message]:
        if not isinstance(item, dict) or not isinstance(item.get("method"), str):
            continue
        method = item["method"]
        params = item.get("params")
        target = params.get(TARGET_PARAMS[method]) if method in TARGET_PARAMS and isinstance(params, dict) else None
        calls.append(MCPCall(method, target if isinstance(target, str) else None))
    return MCPRequest(tuple(calls))
