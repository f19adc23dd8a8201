"""The instance's name in every session id it hands out, so that nginx can send a session back to it.

Stateful sessions live in one process. With several stateful instances behind
one nginx, every request of a session must reach the instance that holds it,
and MCP clients keep no cookies: what they do send back is the session id, in
the ``Mcp-Session-Id`` header (Streamable HTTP) or in the ``session_id`` query
parameter of the message endpoint (the 2024-11-05 HTTP+SSE transport). With
MCP_INSTANCE_NAME set, those ids read ``<name>.<the SDK's id>``, and the
nginx variant (``nginx/mcp-server-stateful.conf``) maps the name to the
instance's upstream.

The SDK mints its ids itself (``uuid4().hex``) and offers no hook for it, so
the ids are rewritten at the bridge: the name is put in front on the way out,
checked and taken off on the way in. An id that does not carry this
instance's name (another instance's, a bare SDK id, anything made up) reaches
the SDK as the nil UUID, which ``uuid4`` never produces (RFC 9562 section
5.9), so the SDK answers it exactly as any unknown session: 404.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import ASGIApp
    from starlette.types import Message
    from starlette.types import Receive
    from starlette.types import Scope
    from starlette.types import Send

SESSION_HEADER = b"mcp-session-id"
# RFC 9562 section 5.9: the nil UUID, in the SDK's form (32 hex digits), a session id it never mints.
UNKNOWN_SESSION = b"0" * 32
_QUERY_SESSION = re.compile(rb"(^|&)(session_id=)([^&]*)")
_ANNOUNCED_SESSION = re.compile(rb"([?&]session_id=)([0-9a-f]{32})")


class InstanceSessionIds:
    """``<name>.`` in front of each session id this process hands out, checked on each it is given back."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.prefix = name.encode("ascii") + b"."

    def outward(self, session_id: bytes) -> bytes:
        return self.prefix + session_id

    def inward(self, value: bytes) -> bytes:
        """The SDK's id inside a routed one; :data:`UNKNOWN_SESSION` for an id this instance did not hand out."""
        if value.startswith(self.prefix) and len(value) > len(self.prefix):
            return value[len(self.prefix) :]
        return UNKNOWN_SESSION

    def streamable_http(self, app: ASGIApp) -> ASGIApp:
        """Streamable HTTP: ``Mcp-Session-Id`` routed on the request, prefixed on the response."""

        async def routed(scope: Scope, receive: Receive, send: Send) -> None:
            headers = scope["headers"]
            if any(name == SESSION_HEADER for name, _ in headers):
                scope = {
                    **scope,
                    "headers": [
                        (name, self.inward(value) if name == SESSION_HEADER else value) for name, value in headers
                    ],
                }

            async def send_routed(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message = {
                        **message,
                        "headers": [
                            (name, self.outward(value) if name.lower() == SESSION_HEADER else value)
                            for name, value in message.get("headers", ())
                        ],
                    }
                await send(message)

            await app(scope, receive, send_routed)

        return routed

    def announced(self, send: Send) -> Send:
        """HTTP+SSE: the ``endpoint`` event (the stream's first) names the message URL with the routed id."""
        pending = True

        async def send_routed(message: Message) -> None:
            nonlocal pending
            if pending and message["type"] == "http.response.body" and message.get("body"):
                pending = False
                body = _ANNOUNCED_SESSION.sub(lambda m: m.group(1) + self.outward(m.group(2)), message["body"], count=1)
                message = {**message, "body": body}
            await send(message)

        return send_routed

    def posted(self, scope: Scope) -> Scope:
        """HTTP+SSE: every ``session_id`` parameter of a message POST routed back to the SDK's id."""
        query: bytes = scope.get("query_string", b"")
        if b"session_id=" not in query:
            return scope
        routed = _QUERY_SESSION.sub(lambda m: m.group(1) + m.group(2) + self.inward(m.group(3)), query)
        return {**scope, "query_string": routed}
