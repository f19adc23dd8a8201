"""Raw MCP requests for the Flask test client and httpx: the bytes real clients send, in both eras."""

from __future__ import annotations

import json
from typing import Any

MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"
ACCEPT = "application/json, text/event-stream"


def request_body(
    method: str, params: dict[str, Any] | None = None, *, era: str = MODERN, id: int = 1
) -> dict[str, Any]:
    params = dict(params or {})
    if era == MODERN:
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
            **params.get("_meta", {}),
        }
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": params}


def request_headers(
    method: str, name: str | None = None, *, era: str = MODERN, token: str | None = None
) -> dict[str, str]:
    headers = {"Accept": ACCEPT, "Content-Type": "application/json", "MCP-Protocol-Version": era}
    if era == MODERN:
        headers["Mcp-Method"] = method
        if name is not None:
            headers["Mcp-Name"] = name
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def call_tool(
    name: str, arguments: dict[str, Any] | None = None, *, era: str = MODERN, token: str | None = None
) -> tuple[dict[str, str], bytes]:
    body = request_body("tools/call", {"name": name, "arguments": arguments or {}}, era=era)
    return request_headers("tools/call", name, era=era, token=token), json.dumps(body).encode()


def messages(content_type: str | None, body: bytes) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a response, whether plain JSON or Server-Sent Events.

    An event with empty data is a priming event (stateful mode, resumable streams): an id, no message.
    """
    if content_type and content_type.startswith("text/event-stream"):
        found = []
        for line in body.decode().splitlines():
            if line.startswith("data:") and line[5:].strip():
                found.append(json.loads(line[5:].strip()))
        return found
    return [json.loads(body)]


def result_of(content_type: str | None, body: bytes) -> dict[str, Any]:
    """The final JSON-RPC response among the messages."""
    final = [m for m in messages(content_type, body) if "id" in m and ("result" in m or "error" in m)]
    assert len(final) == 1, body
    return final[0]
