"""Rate limits: per user for authenticated calls, per address for refused credentials.

Two limits, because they stop different things:

* ``MCP_RATE_LIMIT`` per principal (issuer + subject) on every authenticated
  request: one runaway agent cannot starve the others. Checked right after
  authentication, so the key is the verified caller, not a header anyone can set.
* ``MCP_RATE_LIMIT_FAILED_AUTH`` per client address on refused credentials
  (no token, a bad one): it blunts token guessing, since past it every further
  guess gets 429 instead of an answer. A caller with a valid token is never
  held back by it, with one exception: a token that can only be judged by
  asking the authorization server (an opaque token to introspect, a JWT naming
  a key this server has not loaded) is not asked about for an address already
  past the limit (:meth:`RateLimits.check_outbound`), so junk tokens cost the
  authorization server and this server's threads nothing once the limit is hit.
  The address is the TCP peer's, or with ``MCP_TRUSTED_PROXIES=n`` the one
  ``n`` proxies back in ``X-Forwarded-For``: behind nginx without it, every
  client shares nginx's 127.0.0.1, and one guesser fills that one bucket.

The counting is the ``limits`` library's (the engine Flask-Limiter runs on),
fixed windows in ``MCP_RATE_LIMIT_STORAGE``: ``memory://`` counts per worker
process; ``redis://host:port`` shares one count across workers and machines.
Flask-Limiter itself is not used: its per-request hooks (resolving every
limit of every endpoint, request-context bookkeeping, header injection)
measured 0.45 ms per request, about 40 % of a whole tool call in-process,
where one counter hit costs under 10 microseconds. If the storage fails,
requests are let through with a log line: a broken limiter must not take the
service down.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from flask import Response
from flask import has_request_context
from flask import request
from limits import RateLimitItem
from limits import parse_many
from limits.storage import MemoryStorage
from limits.storage import Storage
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from app.auth.principal import Principal
from app.errors import TooManyRequests
from app.settings import Settings

logger = logging.getLogger(__name__)

STORAGE_ERROR_LOG_INTERVAL = 60.0
# The identifiers of one caller's counters, and each limit with its storage key and window length.
_Counters = tuple[tuple[str, ...], list[tuple[RateLimitItem, str, int]]]
KEY_CACHE_SIZE = 4096


class TooManyRefusals(Exception):
    """An outbound call refused because the caller's address is past the failed-credentials limit."""

    def __init__(self, response: Response) -> None:
        super().__init__("too many refused credentials")
        self.response = response


def _too_many(description: str, retry_after: int, limit: RateLimitItem) -> Response:
    return TooManyRequests(description, retry_after=retry_after, limit=limit.amount).response()


class TimerlessMemoryStorage(MemoryStorage):
    """limits' in-memory storage, expiring counters as requests count them instead of from a timer thread.

    ``MemoryStorage`` starts a new ``threading.Timer`` thread whenever the previous
    one has run (every 10 ms while requests keep coming) to sweep expired counters:
    about a hundred thread starts a second per worker, each one competing with the
    request threads for the GIL. Fixed windows need no such thread: a counter past
    its expiry is dropped when it is read (``MemoryStorage.get`` does that), and
    the counters nobody reads any more are swept from the request path at most
    once every ``SWEEP_INTERVAL`` seconds.
    """

    SWEEP_INTERVAL = 10.0

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        super().__init__(uri, **options)
        self.timer.cancel()  # the one the parent started; no other is ever started here
        self._next_sweep = 0.0
        self._counting = threading.Lock()  # one lock for every counter: each hit holds it for a dict update

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        now = time.time()
        if now >= self._next_sweep:
            self._sweep(now)
        with self._counting:
            if self.expirations.get(key, 0) <= now:  # a new window: the counter starts over
                self.storage[key] = amount
                self.expirations[key] = now + expiry
                return amount
            count = self.storage[key] + amount
            self.storage[key] = count
            return count

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self.SWEEP_INTERVAL
        for key, expires in list(self.expirations.items()):
            if expires <= now:
                self.storage.pop(key, None)
                self.expirations.pop(key, None)
                self.locks.pop(key, None)


def rate_limit_storage(uri: str) -> Storage:
    if uri.startswith("memory://"):
        return TimerlessMemoryStorage(uri)
    return storage_from_string(uri)  # type: ignore[return-value]  # sync URIs only (settings); the stub adds async


class RateLimits:
    """The counters of one app; the authentication hook asks them after every verdict."""

    def __init__(self, settings: Settings) -> None:
        assert settings.rate_limit is not None
        self._strategy = FixedWindowRateLimiter(rate_limit_storage(settings.rate_limit_storage))
        self._per_principal = parse_many(settings.rate_limit)
        self._failed_auth = parse_many(settings.rate_limit_failed_auth)
        self._last_storage_error = 0.0
        self._storage = self._strategy.storage
        # Storage keys per caller and limit list: limits builds them with a string join per identifier.
        self._keys: dict[tuple[int, tuple[str, ...]], _Counters] = {}
        self._principals: dict[int, tuple[Principal, _Counters]] = {}
        if settings.rate_limit_storage.startswith("memory://") and settings.workers > 1:
            logger.warning(
                "rate limits count per worker process with MCP_RATE_LIMIT_STORAGE=memory://; "
                "use redis://... to share them across %d workers",
                settings.workers,
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits | None:
        return cls(settings) if settings.rate_limit is not None else None

    def _counters(self, items: list[RateLimitItem], identifiers: tuple[str, ...]) -> _Counters:
        """Each limit with its storage key and window length: limits builds a key with a string join per hit."""
        cached = (id(items), identifiers)
        counters = self._keys.get(cached)
        if counters is None:
            if len(self._keys) >= KEY_CACHE_SIZE:
                self._keys.clear()
            counters = self._keys[cached] = (
                identifiers,
                [(item, item.key_for(*identifiers), item.get_expiry()) for item in items],
            )
        return counters

    def _exceeded(self, counters: _Counters) -> tuple[RateLimitItem, int] | None:
        """Count one hit against every limit; the first one exceeded and the seconds until it resets."""
        identifiers, limits = counters
        try:
            for item, key, expiry in limits:
                # FixedWindowRateLimiter.hit, with the key built once.
                if self._storage.incr(key, expiry, 1) > item.amount:
                    reset = self._strategy.get_window_stats(item, *identifiers).reset_time
                    return item, max(1, int(reset - time.time()) + 1)
        except Exception:
            self._storage_failed()
        return None

    def admit(self, principal: Principal) -> Response | None:
        """None while this caller is within ``MCP_RATE_LIMIT``, else the 429 to answer."""
        cached = self._principals.get(id(principal))
        if cached is None or cached[0] is not principal:
            if len(self._principals) >= KEY_CACHE_SIZE:
                self._principals.clear()
            counters = self._counters(self._per_principal, ("principal", principal.issuer, principal.sub))
            # The verifier hands out one Principal per token; the entry keeps it alive, so its id is not reused.
            cached = self._principals[id(principal)] = (principal, counters)
        exceeded = self._exceeded(cached[1])
        if exceeded is None:
            return None
        item, retry_after = exceeded
        return _too_many(f"Rate limit exceeded: {item}", retry_after, item)

    def check_outbound(self) -> None:
        """Before a call to the authorization server on this request's behalf: raise
        :class:`TooManyRefusals` if its address is already past ``MCP_RATE_LIMIT_FAILED_AUTH``.

        It only looks (``test``, not ``hit``): the credential is counted once it is judged.
        """
        if not has_request_context():
            return
        address = request.remote_addr or "unknown"
        try:
            for item in self._failed_auth:
                if not self._strategy.test(item, "failed-auth", address):
                    reset = self._strategy.get_window_stats(item, "failed-auth", address).reset_time
                    retry_after = max(1, int(reset - time.time()) + 1)
                    raise TooManyRefusals(
                        _too_many("Too many refused credentials from this address; retry later", retry_after, item)
                    )
        except TooManyRefusals:
            raise
        except Exception:
            self._storage_failed()

    def _storage_failed(self) -> None:
        now = time.monotonic()
        if now - self._last_storage_error >= STORAGE_ERROR_LOG_INTERVAL:
            self._last_storage_error = now
            logger.exception("rate limit storage failed; letting requests through")

    def refuse(self, address: str | None) -> Response | None:
        """Count one refused credential from ``address``; the 429 to answer instead once past the limit."""
        exceeded = self._exceeded(self._counters(self._failed_auth, ("failed-auth", address or "unknown")))
        if exceeded is None:
            return None
        item, retry_after = exceeded
        return _too_many("Too many refused credentials from this address; retry later", retry_after, item)
