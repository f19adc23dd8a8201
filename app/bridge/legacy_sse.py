"""The HTTP+SSE transport of protocol version 2024-11-05, for clients that speak nothing newer.

MCP 2024-11-05, Transports, HTTP with SSE: the client opens a Server-Sent Events
stream with a GET; the server's first event, ``endpoint``, names the URL the
client then POSTs every message to; every answer, notification and
server-to-client request comes down the stream. The specification has since
deprecated it in favour of Streamable HTTP (2025-03-26), and the SDK still
ships it as ``SseServerTransport``, which is what runs here: no protocol code
of our own.

Only in stateful mode (MCP_STATEFUL=1 with MCP_LEGACY_SSE=1): a session is the
open stream, so its messages must reach the one process holding it. Both
halves run on the stateful loop thread (:class:`~app.bridge.event_loop.LoopThread`),
as the Streamable HTTP manager does, each stream serving one session of the
SDK's server for as long as it is open. The URLs sit below the MCP endpoint,
``<endpoint>/sse`` and ``<endpoint>/messages/``, which keeps them inside the
protected resource (RFC 9728 section 3.3: clients accept the metadata of a
resource whose URL is a prefix of the one they connect to) and behind the same
hooks (Origin and Host, the bearer token, per-tool scopes, rate limits, audit).

The session is bound to the caller that opened the stream (the SDK compares
issuer, subject and client of every message POST with the opener's and answers
404 otherwise). When the client goes away the stream's exchange is cancelled:
the session ends and its running tools are cancelled with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

from mcp.server.sse import SseServerTransport
from starlette.responses import Response

from app.bridge.instance_routing import InstanceSessionIds

if TYPE_CHECKING:
    from mcp.server.lowlevel.server import Server
    from starlette.types import Receive
    from starlette.types import Scope
    from starlette.types import Send


METHOD_NOT_ALLOWED = b'{"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "Method Not Allowed"}}'


def legacy_paths(endpoint_path: str) -> tuple[str, str]:
    """The stream's and the message endpoint's paths for an MCP endpoint at ``endpoint_path``."""
    base = "" if endpoint_path == "/" else endpoint_path
    return base + "/sse", base + "/messages/"


class LegacySSE:
    """One process's HTTP+SSE sessions: the SDK's transport, and the SDK's server run over each stream."""

    def __init__(
        self,
        server: Server[Any],
        message_path: str,
        *,
        max_body_bytes: int,
        session_ids: InstanceSessionIds | None = None,
    ) -> None:
        self.server = server
        # No security settings: Origin and Host were checked before the request reached the bridge.
        self.transport = SseServerTransport(message_path, max_request_body_size=max_body_bytes)
        self.session_ids = session_ids

    async def open_stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET: the stream, announcing its message endpoint, and the session served over it until it closes."""
        if scope["method"] != "GET":  # HEAD, which Flask routes with every GET: no session for a headers-only answer
            await Response(METHOD_NOT_ALLOWED, 405, {"Allow": "GET"}, "application/json")(scope, receive, send)
            return
        if self.session_ids is not None:
            send = self.session_ids.announced(send)
        async with self.transport.connect_sse(scope, receive, send) as (read_stream, write_stream):
            await self.server.run(read_stream, write_stream, self.server.create_initialization_options())

    async def post_message(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST: one message for a session's stream; 202 once accepted, the answer comes down the stream."""
        if self.session_ids is not None:
            scope = self.session_ids.posted(scope)
        await self.transport.handle_post_message(scope, receive, send)
