"""What a stateful request runs on the process's loop thread: Streamable HTTP, or the 2024-11-05 HTTP+SSE transport.

Stateful mode only (MCP_STATEFUL=1); nothing here runs for a stateless request.
Every stateful request is one :class:`~app.bridge.asgi_to_wsgi.ThreadedExchange`
on the loop thread; this picks its ASGI application by the URL rule the request
matched:

* the MCP endpoint: the SDK's Streamable HTTP session manager, resumable from
  MCP_EVENT_STORE (:mod:`app.bridge.resumability`);
* with MCP_LEGACY_SSE=1, ``<endpoint>/sse`` and ``<endpoint>/messages/``: the
  SDK's ``SseServerTransport`` (:mod:`app.bridge.legacy_sse`);

each with the instance's name in its session ids when MCP_INSTANCE_NAME is set
(:mod:`app.bridge.instance_routing`).

A session's streams (an HTTP+SSE stream, a Streamable HTTP GET stream) stay
open as long as the client keeps them; a worker told to stop would wait its
whole graceful timeout for them. So the streams are kept in a set, and once
the worker stops (gunicorn: ``worker.alive`` turns false) they are ended:
clients see their stream close and come back to a running instance, while
calls in flight finish within the graceful timeout as before.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING
from typing import Any

import anyio
from starlette.responses import Response

from app.bridge.instance_routing import InstanceSessionIds
from app.bridge.legacy_sse import LegacySSE
from app.bridge.legacy_sse import legacy_paths
from app.bridge.resumability import ResumableSessionManager
from app.event_store import create_event_store

if TYPE_CHECKING:
    from mcp.server.lowlevel.server import Server
    from starlette.types import ASGIApp
    from starlette.types import Receive
    from starlette.types import Scope
    from starlette.types import Send

    from app.bridge.event_loop import ServingLoop
    from app.settings import Settings


logger = logging.getLogger(__name__)

STOP_CHECK_INTERVAL = 0.25
SHUTTING_DOWN = b'{"jsonrpc": "2.0", "id": null, "error": {"code": -32603, "message": "The server is restarting"}}'


class StatefulTransports:
    """The stateful loop's ASGI applications, built once per serving loop (once per worker process)."""

    def __init__(
        self,
        server: Server[Any],
        settings: Settings,
        *,
        max_body_bytes: int,
        session_manager: Callable[..., ResumableSessionManager] | None = None,
    ) -> None:
        """``session_manager`` builds the session managers (:class:`ResumableSessionManager` by default; the
        per-caller session cap passes a subclass that counts sessions, app.principal_caps)."""
        self.server = server
        self.build_manager = session_manager or ResumableSessionManager
        self.settings = settings
        self.max_body_bytes = max_body_bytes
        self.session_ids = InstanceSessionIds(settings.instance_name) if settings.instance_name else None
        self.legacy_rules = legacy_paths(settings.endpoint_path) if settings.legacy_sse else None
        self._lock = threading.Lock()
        self._serving: ServingLoop | None = None
        self._apps: dict[str | None, ASGIApp] = {}
        # The open session streams, each a cancel scope; touched on the loop thread only.
        self._streams: set[anyio.CancelScope] = set()
        self._stopping = False

    def manager(self, *, json_response: bool) -> ResumableSessionManager:
        """A session manager for a new serving loop, with an event store of its own unless MCP_EVENT_STORE=off."""
        settings = self.settings
        store = (
            create_event_store(
                settings.event_store, max_events=settings.event_store_max_events, max_age=settings.event_store_max_age
            )
            if settings.event_store
            else None
        )
        return self.build_manager(
            app=self.server,
            event_store=store,
            max_age=settings.event_store_max_age,
            json_response=json_response,
            stateless=False,
            # The SSE retry field, sent in each priming event, tells a client when to come back.
            retry_interval=settings.sse_retry_ms if store is not None else None,
            max_request_body_size=self.max_body_bytes,
        )

    def app_for(self, serving: ServingLoop, rule: str | None) -> ASGIApp:
        """The application for a request that matched URL rule ``rule``, on ``serving``'s loop."""
        if serving is not self._serving:
            with self._lock:
                if serving is not self._serving:
                    self._apps = self._build(serving)
                    self._serving = serving
        apps = self._apps
        return apps.get(rule) or apps[None]

    def _build(self, serving: ServingLoop) -> dict[str | None, ASGIApp]:
        streamable: ASGIApp = serving.manager.handle_request
        if self.session_ids is not None:
            streamable = self.session_ids.streamable_http(streamable)
        apps: dict[str | None, ASGIApp] = {None: self._streams_held(streamable, methods=("GET",))}
        if self.legacy_rules is not None:
            stream_rule, messages_rule = self.legacy_rules
            legacy = LegacySSE(
                self.server, messages_rule, max_body_bytes=self.max_body_bytes, session_ids=self.session_ids
            )
            apps[stream_rule] = self._streams_held(legacy.open_stream, methods=("GET",))
            apps[messages_rule] = legacy.post_message
        return apps

    def _streams_held(self, app: ASGIApp, *, methods: tuple[str, ...]) -> ASGIApp:
        """``app``, with the requests of ``methods`` (the ones that open a session stream) ended at a stop."""

        async def held(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["method"] not in methods:
                await app(scope, receive, send)
                return
            if self._stopping:
                await Response(SHUTTING_DOWN, 503, {"Retry-After": "1"}, "application/json")(scope, receive, send)
                return
            with anyio.CancelScope() as stream:
                self._streams.add(stream)
                try:
                    await app(scope, receive, send)
                finally:
                    self._streams.discard(stream)

        return held

    def end_streams_when(self, serving: ServingLoop, stopping: Callable[[], bool]) -> None:
        """Watch ``stopping`` on ``serving``'s loop; once it is true, end every open session stream."""

        async def watch() -> None:
            while not stopping():
                await asyncio.sleep(STOP_CHECK_INTERVAL)
            self._stopping = True
            if self._streams:
                logger.info("stopping: ending %d open session stream(s); their clients reconnect", len(self._streams))
            for stream in list(self._streams):
                stream.cancel()

        serving.loop.call_soon_threadsafe(lambda: serving.loop.create_task(watch()))
