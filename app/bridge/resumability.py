"""The SDK's stateful session manager, giving every session transport an event store view of its own.

``StreamableHTTPSessionManager`` hands the one ``event_store`` it was given to
every session's transport, and the SDK's stream ids are unique only within a
session (see :mod:`app.event_store`). The manager reads its ``event_store``
attribute once for each session it admits, when it builds the transport; here
that attribute is a property that answers a fresh
:class:`~app.event_store.SessionEventStore` over the shared store each time, so
each transport stores under names of its own and replays nothing of another's.
Nothing of the SDK is patched: the property replaces a public attribute.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http import EventStore
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from app.event_store import SessionEventStore


class ResumableSessionManager(StreamableHTTPSessionManager):
    """A stateful manager whose sessions resume from one shared store, each seeing only its own events."""

    def __init__(self, app: Server[Any], *, event_store: EventStore | None, max_age: float, **kwargs: Any) -> None:
        self._shared_store: EventStore | None = None
        self._max_age = max_age
        super().__init__(app, event_store=event_store, **kwargs)

    @property
    def event_store(self) -> EventStore | None:
        """A new view for each read: the SDK reads it once per session transport it creates."""
        if self._shared_store is None:
            return None
        return SessionEventStore(self._shared_store, max_age=self._max_age)

    @event_store.setter
    def event_store(self, store: EventStore | None) -> None:
        self._shared_store = store

    @property
    def shared_store(self) -> EventStore | None:
        return self._shared_store

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        try:
            async with super().run():
                yield
        finally:
            close = getattr(self._shared_store, "close", None)
            if close is not None:
                await close()
