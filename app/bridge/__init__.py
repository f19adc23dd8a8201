"""The MCP endpoint: the official SDK's Streamable HTTP handler, served inside Flask.

``init_app`` mounts the endpoint at the resource URL's path (with and without
a trailing slash, never a redirect: a 307/308 loses the POST body or the token
in real clients). By the time a request reaches the view, ``before_request``
hooks have checked Origin, Host and the bearer token; the view hands the
request to the SDK and streams its answer back untouched.

Stateless, each serving loop runs the SDK's session manager twice: as
configured, and in JSON-response mode. A request whose handler can only ever
produce its one answer goes to the second: ``initialize``, ``ping``,
``server/discover`` and the list methods, which run no tool code, and calls of
tools, prompts and resources that are sync functions without a ``Context``
parameter (they cannot report progress, log or ask the client anything, and,
run inline, they hold the loop until they return, so not even a keepalive could
be sent meanwhile). The SDK then answers directly instead of through its
Server-Sent Events machinery (a task group, memory streams, an event-stream
response), about 0.2 ms of CPU in the 2026-07-28 era and 0.7 ms in the
2025-11-25 era per request. In the 2026-07-28 era the answer is byte for byte
the same (the SDK defers SSE until a notification comes); in the handshake era
it is the same JSON-RPC response as ``application/json`` instead of one event,
which the transport allows for any request. Everything else (async tools, and
tools taking a ``Context``, which may stream) takes the configured path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from collections.abc import Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING

from flask import Flask
from flask import Response
from flask import g
from flask import request
from mcp.server.streamable_http import check_accept_headers
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from werkzeug.exceptions import MethodNotAllowed

from app.bridge.asgi_to_wsgi import TIMED_OUT
from app.bridge.asgi_to_wsgi import ASGIExchange
from app.bridge.asgi_to_wsgi import Exchange
from app.bridge.asgi_to_wsgi import StreamingBody
from app.bridge.asgi_to_wsgi import ThreadedExchange
from app.bridge.asgi_to_wsgi import asgi_scope
from app.bridge.asgi_to_wsgi import client_socket
from app.bridge.auth_context import SDKUsers
from app.bridge.auth_context import handler_context
from app.bridge.event_loop import LoopPool
from app.bridge.event_loop import LoopThread
from app.bridge.legacy_sse import legacy_paths
from app.bridge.stateful import StatefulTransports
from app.errors import ServerError
from app.mcp_request import current_mcp_request

if TYPE_CHECKING:
    from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
    from mcp.server.mcpserver import MCPServer
    from starlette.types import Message
    from starlette.types import Scope

    from app.bridge.resumability import ResumableSessionManager
    from app.settings import Settings

MAX_BODY_BYTES = 4 * 1024 * 1024
# Methods whose SDK handlers send nothing but their answer: no tool, resource or prompt code runs.
SINGLE_ANSWER_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "server/discover",
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
    }
)
FIRST_EVENT_WAIT = 1.0
EXTENSION_KEY = "mcp_bridge"


class PassThroughResponse(Response):
    """A response that adds no Content-Type of its own: the SDK's headers go out as sent."""

    default_mimetype = None


class MCPBridge:
    """Per-process state of the endpoint: where the SDK's handler runs."""

    def __init__(
        self,
        server: MCPServer,
        settings: Settings,
        answered_at_once: Mapping[str, frozenset[str]] | None = None,
        *,
        session_manager: Callable[..., ResumableSessionManager] | None = None,
    ) -> None:
        """``answered_at_once``: per method, the targets whose handler sends nothing but its answer
        (``ScopedServer.answered_at_once``): their calls take the JSON path too. ``session_manager`` builds
        the stateful mode's session managers (:class:`ResumableSessionManager` by default)."""
        self.server = server
        self.answered_at_once = dict(answered_at_once or {})
        self.endpoint_path = settings.endpoint_path
        self.sdk_users = SDKUsers(settings.resource_url)
        self.stateful = settings.stateful
        # Stateful: a standalone GET stream is ended (cleanly; the client reconnects) after this many seconds.
        self.stream_lifetime = settings.stream_lifetime if settings.stateful else None
        json_response = settings.json_response
        # Stateful sessions live in one manager; with MCP_JSON_RESPONSE every answer is JSON already.
        self.single_answer_path = not self.stateful and not json_response

        # Stateful: Streamable HTTP (resumable), HTTP+SSE with MCP_LEGACY_SSE; see app.bridge.stateful.
        self.stateful_transports = (
            StatefulTransports(
                server._lowlevel_server, settings, max_body_bytes=MAX_BODY_BYTES, session_manager=session_manager
            )
            if self.stateful
            else None
        )

        def manager(*, json: bool) -> StreamableHTTPSessionManager:
            if self.stateful_transports is not None:
                return self.stateful_transports.manager(json_response=json)
            return StreamableHTTPSessionManager(
                app=server._lowlevel_server,
                stateless=not self.stateful,
                json_response=json,
                max_request_body_size=MAX_BODY_BYTES,
            )

        def managers() -> tuple[StreamableHTTPSessionManager, ...]:
            if self.single_answer_path:
                return manager(json=json_response), manager(json=True)
            return (manager(json=json_response),)

        self.loops = LoopPool(managers)
        self.loop_thread = LoopThread(managers)

    def start_worker(self, stopping: Callable[[], bool] | None = None) -> None:
        """Start serving in this process (gunicorn calls it after forking a worker).

        ``stopping`` says when the worker has been told to stop (gunicorn: ``not worker.alive``);
        stateful, the session streams are then ended instead of holding the stop up.
        """
        if self.stateful_transports is not None:
            serving = self.loop_thread.serving
            if stopping is not None:
                self.stateful_transports.end_streams_when(serving, stopping)
        else:
            self.loops.release(self.loops.acquire())

    def stop_worker(self) -> None:
        self.loops.close()
        self.loop_thread.close()

    def _exchange(self, scope: Scope, body: bytes, user: AuthenticatedUser | None) -> Exchange:
        if self.stateful_transports is not None:
            serving = self.loop_thread.serving
            rule = request.url_rule
            app = self.stateful_transports.app_for(serving, rule.rule if rule is not None else None)
            return ThreadedExchange(serving, app, scope, body, handler_context(user))
        pooled = self.loops.acquire()
        manager = pooled.managers[-1] if self.single_answer_path and self._single_answer() else pooled.manager
        return ASGIExchange(
            pooled,
            manager.handle_request,
            scope,
            body,
            handler_context(user),
            on_done=lambda: self.loops.release(pooled),
        )

    def _is_legacy_stream(self) -> bool:
        """An HTTP+SSE stream (MCP_LEGACY_SSE): the session itself, which MCP_STREAM_LIFETIME leaves alone, since
        ending it would end the session."""
        transports = self.stateful_transports
        rule = request.url_rule
        return (
            transports is not None
            and transports.legacy_rules is not None
            and rule is not None
            and rule.rule == transports.legacy_rules[0]
        )

    def _single_answer(self) -> bool:
        """Whether this request is one JSON-RPC message whose answer can only be one JSON body.

        Only when the client accepts Server-Sent Events too: one that does not is refused
        (406) by the configured path, and must be refused the same way for every method.
        """
        calls = current_mcp_request().calls
        if len(calls) != 1:
            return False
        call = calls[0]
        if call.method not in SINGLE_ANSWER_METHODS:
            targets = self.answered_at_once.get(call.method)
            if targets is None or call.target not in targets:
                return False
        _, accepts_events = check_accept_headers(_AcceptHeader(request.environ.get("HTTP_ACCEPT", "")))  # type: ignore[arg-type]  # it reads .headers only
        return accepts_events

    def handle(self) -> Response:
        if request.method != "POST" and not self.stateful:
            # Stateless: no session to resume or delete, and a standalone GET
            # stream could never carry anything while it held a worker thread.
            # Streamable HTTP allows 405 for both; Werkzeug's 405 carries the Allow header RFC 9110 requires.
            raise MethodNotAllowed(["POST"], "This server is stateless: send every message as a POST")
        body = request.get_data(cache=True) if request.method == "POST" else b""
        # The authentication hook has verified the caller of every request that reaches the endpoint.
        principal, token = g.get("principal"), g.get("access_token")
        user = self.sdk_users.user(principal, token) if principal is not None and token is not None else None
        scope = asgi_scope(request.environ, self.endpoint_path, {"user": user} if user is not None else None)
        exchange = self._exchange(scope, body, user)
        try:
            start = exchange.next_message()
            first = None
            if start is not None:
                # A stream's first event usually follows its headers at once, and then both leave in
                # one write; a stream that stays silent (a session's GET stream) gets its headers now.
                first = exchange.next_message(timeout=FIRST_EVENT_WAIT if _is_event_stream(start) else None)
        except BaseException:
            exchange.close()
            raise
        if start is None or start["type"] != "http.response.start":
            exchange.close()
            return ServerError("The MCP handler gave no answer").response()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", [])]
        if first is TIMED_OUT:
            first = {"type": "http.response.body", "body": b"", "more_body": True}
        chunk = bytes(first.get("body", b"")) if first is not None else b""
        if first is None or not first.get("more_body", False):
            exchange.close()
            if start["status"] >= 400 and not _is_json(headers):
                return _as_jsonrpc_error(start["status"], chunk)
            return PassThroughResponse(chunk, status=start["status"], headers=headers)
        exchange.watch_client(client_socket(request.environ))
        deadline = None
        if self.stream_lifetime is not None and request.method == "GET" and not self._is_legacy_stream():
            deadline = time.monotonic() + self.stream_lifetime
        # Not direct_passthrough: Werkzeug then wraps the body so that closing it also runs the
        # response's call_on_close callbacks (audit, metrics, caps) once the stream has ended.
        stream = StreamingBody(exchange, chunk, deadline=deadline)
        return PassThroughResponse(stream, status=start["status"], headers=headers)


class _AcceptHeader:
    """The one part of a request the SDK's ``check_accept_headers`` reads."""

    __slots__ = ("headers",)

    def __init__(self, accept: str) -> None:
        self.headers = {"accept": accept}


def _is_event_stream(start: Message) -> bool:
    return any(k.lower() == b"content-type" and v.startswith(b"text/event-stream") for k, v in start.get("headers", []))


def _is_json(headers: list[tuple[str, str]]) -> bool:
    return any(k.lower() == "content-type" and v.startswith("application/json") for k, v in headers)


def _as_jsonrpc_error(status: int, body: bytes) -> Response:
    """A few transport refusals of the SDK come as plain text or nothing (415-like 400, 406).

    Clients get the same status with a JSON-RPC error body, as the SDK's other
    refusals have, instead of a body they cannot parse.
    """
    message = body.decode("utf-8", "replace").strip() or HTTPStatus(status).phrase
    error = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}
    return PassThroughResponse(json.dumps(error).encode(), status=status, content_type="application/json")


def init_app(
    app: Flask,
    server: MCPServer,
    settings: Settings,
    answered_at_once: Mapping[str, frozenset[str]] | None = None,
    *,
    session_manager: Callable[..., ResumableSessionManager] | None = None,
) -> MCPBridge:
    bridge = MCPBridge(server, settings, answered_at_once, session_manager=session_manager)
    app.extensions[EXTENSION_KEY] = bridge
    path = settings.endpoint_path
    rules = [path] if path == "/" else [path, path + "/"]
    for rule in rules:
        app.add_url_rule(
            rule,
            endpoint="mcp",
            view_func=bridge.handle,
            methods=["GET", "POST", "DELETE"],
            strict_slashes=False,
        )
    if settings.legacy_sse:
        # The 2024-11-05 HTTP+SSE transport (app.bridge.legacy_sse): the same view, hooks and bearer checks.
        stream_path, messages_path = legacy_paths(settings.endpoint_path)
        app.add_url_rule(stream_path, endpoint="mcp", view_func=bridge.handle, methods=["GET"])
        app.add_url_rule(messages_path, endpoint="mcp", view_func=bridge.handle, methods=["POST"], strict_slashes=False)
    return bridge
