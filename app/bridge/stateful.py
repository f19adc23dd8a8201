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
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING
from typing import Any

from app.bridge.instance_routing import InstanceSessionIds
from app.bridge.legacy_sse import LegacySSE
from app.bridge.legacy_sse import legacy_paths
from app.bridge.resumability import ResumableSessionManager
from app.event_store import create_event_store

if TYPE_CHECKING:
    from mcp.server.lowlevel.server import Server
    from starlette.types import ASGIApp

    from app.bridge.event_loop import ServingLoop
    from app.settings import Settings


class StatefulTransports:
    """The stateful loop's ASGI applications, built once per serving loop (once per worker process)."""

    def __init__(self, server: Server[Any], settings: Settings, *, max_body_bytes: int) -> None:
        self.server = server
        self.settings = settings
        self.max_body_bytes = max_body_bytes
        self.session_ids = InstanceSessionIds(settings.instance_name) if settings.instance_name else None
        self.legacy_rules = legacy_paths(settings.endpoint_path) if settings.legacy_sse else None
        self._lock = threading.Lock()
        self._serving: ServingLoop | None = None
        self._apps: dict[str | None, ASGIApp] = {}

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
        return ResumableSessionManager(
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
        apps: dict[str | None, ASGIApp] = {None: streamable}
        if self.legacy_rules is not None:
            stream_rule, messages_rule = self.legacy_rules
            legacy = LegacySSE(
                self.server, messages_rule, max_body_bytes=self.max_body_bytes, session_ids=self.session_ids
            )
            apps[stream_rule] = legacy.open_stream
            apps[messages_rule] = legacy.post_message
        return apps
