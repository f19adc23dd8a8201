"""Per-caller caps: how much of the server one verified caller may hold at once.

The rate limit (``MCP_RATE_LIMIT``) counts requests over time; it cannot stop a
caller that opens a few long streams and keeps them, or opens sessions until
the session table is full. These caps count what one caller (issuer + subject,
the same key as the rate limit) holds *now*:

* ``MCP_CAP_IN_FLIGHT`` (default 32): requests to the MCP endpoint being served
  or streamed, from the moment the caller is verified until the WSGI server has
  sent the last byte of the answer. A stream counts as long as it is open.
* ``MCP_CAP_STREAMS`` (default 8): of those, the streams opened to stay open:
  standalone GET streams (stateful mode) and 2026-07-28 ``subscriptions/listen``.
* ``MCP_CAP_SESSIONS`` (default 64, stateful mode): sessions the caller has open,
  counted by the SDK's session manager itself (:class:`SessionCountingManager`),
  from the ``initialize`` that opens one until it is deleted or expires.

A request over a cap is answered 429 with ``Retry-After`` and a JSON body that
names the cap (``{"error": "too_many_requests", "cap": "in_flight", "limit":
32, ...}``), before anything of it runs, and counted in ``/metrics``
(``mcp_cap_refusals_total{cap}``). Counting starts in the authentication hook,
after the token is verified (an anonymous request holds nothing but its
connection, and the failed-credentials limit covers those), and the count is
given back when the WSGI server closes the response (Werkzeug's
``call_on_close``), the way a stream's end is noticed.

Where the counts live follows ``MCP_RATE_LIMIT_STORAGE``: ``memory://`` counts
per worker process (a dictionary lookup, a deque append and a pop: no lock);
``redis://`` counts across every worker and instance, one script call on the way
in and one on the way out, each counter expiring an hour after it was created
so that a worker that died holding counts cannot lock its callers out for
longer. Sessions live in one process (stateful mode runs one worker), and so do
their counts. If Redis fails, requests are let through with a log line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING
from typing import Any
from typing import cast

from flask import Flask
from flask import Request
from flask import Response
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from app import request_end
from app.bridge.resumability import ResumableSessionManager
from app.request_end import Closer
from app.settings import Settings

if TYPE_CHECKING:
    from limits.storage import RedisStorage
    from mcp.server.auth.middleware.bearer_auth import AuthorizationContext
    from mcp.server.streamable_http import StreamableHTTPServerTransport
    from redis import Redis

    from app.auth.principal import Principal
    from app.mcp_calls import MCPCall

logger = logging.getLogger(__name__)

Key = tuple[str, str]
LISTEN = "subscriptions/listen"
# Only handshake-era requests open sessions (a 2026-07-28 request is stateless even in stateful mode);
# without the header the SDK assumes 2025-03-26.
HANDSHAKE_VERSIONS = frozenset(HANDSHAKE_PROTOCOL_VERSIONS)
DEFAULT_VERSION = "2025-03-26"
RELEASE_KEY = "mcp_caps_release"
REDIS_COUNTER_TTL = 3600
PLAIN_CACHE_SIZE = 4096
LOG_INTERVAL = 60.0

# What a refusal says, per cap: the variable that sets it, what is held, and when to try again.
CAPS: dict[str, tuple[str, str, int]] = {
    "in_flight": ("MCP_CAP_IN_FLIGHT", "{limit} requests in flight; retry when one has finished", 1),
    "streams": ("MCP_CAP_STREAMS", "{limit} open streams; close one before opening another", 5),
    "sessions": ("MCP_CAP_SESSIONS", "{limit} open sessions; end one (DELETE) or let one expire", 30),
}


def refusal(cap: str, limit: int) -> Response:
    """The 429 for a caller at ``cap``."""
    variable, held, retry_after = CAPS[cap]
    body = {
        "error": "too_many_requests",
        "error_description": f"This caller already holds {held.format(limit=limit)} (cap {variable})",
        "cap": cap,
        "limit": limit,
    }
    headers = {"Retry-After": str(retry_after), "Cache-Control": "no-store"}
    return Response(json.dumps(body), status=429, mimetype="application/json", headers=headers)


class MemoryCounters:
    """Counts per worker process, without a lock: one deque per caller and cap, one entry per request held.

    ``deque.append`` and ``deque.pop`` are atomic in CPython, so every place taken
    is given back exactly once and no count can drift, however the request threads
    interleave; two requests racing for the last place may both be refused, never
    both admitted past the cap. A request costs an append, a length and a pop.
    """

    SWEEP_AT = 10_000  # callers remembered before the idle ones are forgotten

    def __init__(self) -> None:
        self._slots: dict[tuple[str, Key], deque[None]] = {}
        self.on_sweep: Callable[[], None] | None = None

    def slot(self, cap: str, key: Key) -> deque[None]:
        slot = self._slots.get((cap, key))
        if slot is None:
            if len(self._slots) >= self.SWEEP_AT:
                self._sweep()
            slot = self._slots.setdefault((cap, key), deque())
        return slot

    @staticmethod
    def take(slot: deque[None], limit: int) -> bool:
        slot.append(None)
        if len(slot) > limit:
            slot.pop()
            return False
        return True

    def acquire(self, wanted: tuple[tuple[str, Key, int], ...]) -> str | None:
        """Count one more of each ``(cap, key, limit)``; none at all, and the cap's name, if one is full."""
        taken: list[deque[None]] = []
        for cap, key, limit in wanted:
            slot = self.slot(cap, key)
            if not self.take(slot, limit):
                for other in taken:
                    other.pop()
                return cap
            taken.append(slot)
        return None

    def release(self, wanted: tuple[tuple[str, Key, int], ...]) -> None:
        for cap, key, _ in wanted:
            slot = self._slots.get((cap, key))
            if slot:
                slot.pop()

    def held(self, cap: str, key: Key) -> int:
        slot = self._slots.get((cap, key))
        return len(slot) if slot is not None else 0

    def in_use(self) -> dict[tuple[str, Key], int]:
        """Every count that is not zero (for tests and debugging)."""
        return {name: len(slot) for name, slot in list(self._slots.items()) if slot}

    def _sweep(self) -> None:
        for name, slot in list(self._slots.items()):
            if not slot:
                self._slots.pop(name, None)
        if self.on_sweep is not None:
            self.on_sweep()


# KEYS: the counters; ARGV: their limits, then the counters' time to live. Returns 0, or which one was full.
_ACQUIRE = """
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, ARGV[#ARGV]) end
  if n > tonumber(ARGV[i]) then
    for j = 1, i do
      if redis.call('DECR', KEYS[j]) <= 0 then redis.call('DEL', KEYS[j]) end
    end
    return i
  end
end
return 0
"""
# A counter that expired meanwhile is left alone: nothing is ever counted below zero.
_RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 and redis.call('DECR', key) <= 0 then redis.call('DEL', key) end
end
return 0
"""


class RedisCounters:
    """Counts shared by every worker and instance that use the same Redis (MCP_RATE_LIMIT_STORAGE)."""

    def __init__(self, uri: str, ttl: int = REDIS_COUNTER_TTL) -> None:
        from limits.storage import storage_from_string

        # limits types its factory for sync and async storages alike, and the connection as a three-method
        # protocol: a redis URI gives a RedisStorage whose connection is a redis-py client.
        client = cast("Redis", cast("RedisStorage", storage_from_string(uri)).get_connection())
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._client = client
        self._ttl = ttl
        self._last_error_log = float("-inf")

    @staticmethod
    def _name(cap: str, key: Key) -> str:
        # Issuer and subject come from a verified token, but may be long: the key is a digest of them.
        return "mcp:cap:" + cap + ":" + hashlib.sha256(f"{key[0]}\n{key[1]}".encode()).hexdigest()[:32]

    def acquire(self, wanted: tuple[tuple[str, Key, int], ...]) -> str | None:
        names = [self._name(cap, key) for cap, key, _ in wanted]
        try:
            full = int(self._acquire(keys=names, args=[limit for _, _, limit in wanted] + [self._ttl]))
        except Exception:
            self._failed()
            return None
        return wanted[full - 1][0] if full else None

    def release(self, wanted: tuple[tuple[str, Key, int], ...]) -> None:
        try:
            self._release(keys=[self._name(cap, key) for cap, key, _ in wanted])
        except Exception:
            self._failed()

    def held(self, cap: str, key: Key) -> int:
        # redis-py types a sync client's replies as possibly awaitable, as its async client's.
        return int(cast("bytes | None", self._client.get(self._name(cap, key))) or 0)

    def _failed(self) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= LOG_INTERVAL:
            self._last_error_log = now
            logger.exception("the caps' storage failed; letting requests through")


class SessionLedger:
    """Open stateful sessions per caller, as the session manager opens and discards them.

    A request that may open a session reserves room first (:meth:`reserve`), so
    that concurrent ``initialize`` requests cannot together pass the cap; the
    reservation is given back when its response closes, by which time the
    session, if one was opened, is counted as open.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._lock = threading.Lock()
        self._open: dict[Key, int] = {}
        self._reserved: dict[Key, int] = {}
        self._owners: dict[str, Key] = {}

    def reserve(self, key: Key) -> bool:
        with self._lock:
            if self._open.get(key, 0) + self._reserved.get(key, 0) >= self.cap:
                return False
            self._reserved[key] = self._reserved.get(key, 0) + 1
        return True

    def unreserve(self, key: Key) -> None:
        with self._lock:
            _decrement(self._reserved, key)

    def opened(self, session_id: str, key: Key) -> None:
        with self._lock:
            if session_id not in self._owners:
                self._owners[session_id] = key
                self._open[key] = self._open.get(key, 0) + 1

    def closed(self, session_id: str) -> None:
        with self._lock:
            key = self._owners.pop(session_id, None)
            if key is not None:
                _decrement(self._open, key)

    def open_sessions(self, key: Key) -> int:
        return self._open.get(key, 0)


def _decrement(counts: dict[Key, int], key: Key) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


class SessionCountingManager(ResumableSessionManager):
    """The stateful session manager, telling a :class:`SessionLedger` which caller each session belongs to.

    It overrides two private methods of the SDK's ``StreamableHTTPSessionManager`` (mcp 2.3):
    ``_admit_session(requestor)``, which registers a new session, and
    ``_discard_session(session_id, transport)``, through which every session ends
    (DELETE, idle timeout, a failed opening request, a crash).
    tests/test_principal_caps.py fails with a clear message if an SDK upgrade
    renames them.
    """

    def __init__(self, *args: Any, ledger: SessionLedger, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ledger = ledger

    def _admit_session(self, requestor: AuthorizationContext | None) -> StreamableHTTPServerTransport | None:
        transport = super()._admit_session(requestor)
        if transport is not None and transport.mcp_session_id is not None and requestor is not None:
            self._ledger.opened(transport.mcp_session_id, (str(requestor["issuer"]), str(requestor["subject"])))
        return transport

    async def _discard_session(self, session_id: str, transport: StreamableHTTPServerTransport) -> None:
        self._ledger.closed(session_id)
        await super()._discard_session(session_id, transport)


class PrincipalCaps:
    """The caps of one app; the authentication hook calls :meth:`admit` once the caller is verified."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_refusal: Callable[[str], None] | None = None,
    ) -> None:
        self.in_flight = settings.cap_in_flight
        self.streams = settings.cap_streams
        self.stateful = settings.stateful
        self.sessions = (
            SessionLedger(settings.cap_sessions) if settings.stateful and settings.cap_sessions is not None else None
        )
        memory = settings.rate_limit_storage.startswith("memory://")
        self.counters: MemoryCounters | RedisCounters = (
            MemoryCounters() if memory else RedisCounters(settings.rate_limit_storage)
        )
        self._on_refusal = on_refusal
        self._last_log: dict[str, float] = {}
        # The common request (neither a stream nor a session's start) in memory mode: per verified principal
        # (the verifier hands out the same object for the same token), its slot and the slot's pop, made once.
        self._plain: dict[int, tuple[Principal, deque[None], Callable[[], Any]]] = {}
        if isinstance(self.counters, MemoryCounters):
            self.counters.on_sweep = self._plain.clear

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> PrincipalCaps | None:
        if settings.cap_in_flight is None and settings.cap_streams is None and settings.cap_sessions is None:
            return None
        return cls(settings, **kwargs)

    def session_manager_factory(self) -> Callable[..., ResumableSessionManager] | None:
        """How the bridge builds its stateful session manager, so sessions are counted per caller."""
        if self.sessions is None:
            return None
        return partial(SessionCountingManager, ledger=self.sessions)

    def admit(self, ctx: Any, principal: Principal, method: str, environ: dict[str, Any]) -> Response | None:
        """Count this request against the caller's caps; the 429 to answer instead if one is full.

        ``ctx`` is the request's ``flask.g``: what to give back goes there for :meth:`attach`.
        """
        found = ctx.__dict__
        parsed = found.get("mcp_request")
        calls: tuple[MCPCall, ...] = parsed.calls if parsed is not None else ()
        stream = (method == "GET" and self.stateful) or (len(calls) == 1 and calls[0].method == LISTEN)
        opens_session = (
            self.sessions is not None
            and method == "POST"
            and "HTTP_MCP_SESSION_ID" not in environ
            and environ.get("HTTP_MCP_PROTOCOL_VERSION", DEFAULT_VERSION) in HANDSHAKE_VERSIONS
            and any(call.method == "initialize" for call in calls)
        )
        if not stream and not opens_session:
            limit = self.in_flight
            if limit is None:
                return None
            counters = self.counters
            if isinstance(counters, MemoryCounters):
                plain = self._plain.get(id(principal))
                if plain is None or plain[0] is not principal:
                    plain = self._plain_slot(principal, counters, limit)
                slot = plain[1]
                slot.append(None)
                if len(slot) > limit:
                    slot.pop()
                    return self._refuse("in_flight", principal)
                found[RELEASE_KEY] = plain[2]
                return None
            wanted: tuple[tuple[str, Key, int], ...] = (("in_flight", principal.key, limit),)
            full = counters.acquire(wanted)
            if full is not None:
                return self._refuse(full, principal)
            found[RELEASE_KEY] = partial(counters.release, wanted)
            return None
        key = principal.key
        caps = []
        if self.in_flight is not None:
            caps.append(("in_flight", key, self.in_flight))
        if stream and self.streams is not None:
            caps.append(("streams", key, self.streams))
        wanted = tuple(caps)
        if wanted and (full := self.counters.acquire(wanted)) is not None:
            return self._refuse(full, principal)
        if opens_session:
            assert self.sessions is not None
            if not self.sessions.reserve(key):
                if wanted:
                    self.counters.release(wanted)
                return self._refuse("sessions", principal)
        found[RELEASE_KEY] = partial(self._release, wanted, key if opens_session else None)
        return None

    def _plain_slot(
        self, principal: Principal, counters: MemoryCounters, limit: int
    ) -> tuple[Principal, deque[None], Callable[[], Any]]:
        slot = counters.slot("in_flight", principal.key)
        if len(self._plain) >= PLAIN_CACHE_SIZE:
            self._plain.clear()
        # The principal is kept alive with its entry, so its id cannot be reused while the entry exists.
        entry = self._plain[id(principal)] = (principal, slot, slot.pop)
        return entry

    def _release(self, wanted: tuple[tuple[str, Key, int], ...], reserved: Key | None) -> None:
        if wanted:
            self.counters.release(wanted)
        if reserved is not None:
            assert self.sessions is not None
            self.sessions.unreserve(reserved)

    def _refuse(self, cap: str, principal: Principal) -> Response:
        limit = {"in_flight": self.in_flight, "streams": self.streams}.get(cap)
        if cap == "sessions" and self.sessions is not None:
            limit = self.sessions.cap
        assert limit is not None
        if self._on_refusal is not None:
            self._on_refusal(cap)
        now = time.monotonic()
        if now - self._last_log.get(cap, float("-inf")) >= LOG_INTERVAL:
            self._last_log[cap] = now
            logger.warning(
                "refused a request over the %s cap (%d): sub=%r client_id=%r (logged at most once a minute per cap)",
                cap,
                limit,
                principal.sub,
                principal.client_id,
            )
        return refusal(cap, limit)

    def attach(self, response: Response, req: Request, ctx: Any) -> Closer | None:
        """After the view: give the counts back once the WSGI server has closed the response."""
        return ctx.__dict__.pop(RELEASE_KEY, None)  # type: ignore[no-any-return]  # flask.g; admit put a Closer there


def init_app(app: Flask, caps: PrincipalCaps) -> None:
    app.extensions["mcp_caps"] = caps
    request_end.on_response(app, caps.attach)
