"""Rate limits with Flask-Limiter: per user for authenticated calls, per address for failed ones.

Two limits, because they stop different things:

* ``MCP_RATE_LIMIT`` per principal (issuer + subject) on every authenticated
  request: one runaway agent cannot starve the others. Checked after
  authentication, so the key is the verified caller, not a header anyone can set.
* ``MCP_RATE_LIMIT_FAILED_AUTH`` per client address on refused credentials
  (no token, a bad one): it blunts token guessing, since past it every further
  guess gets 429 instead of an answer. A caller with a valid token is never
  held back by it.

The counters live in ``MCP_RATE_LIMIT_STORAGE``: ``memory://`` counts per
worker process; ``redis://host:port`` shares one count across workers and
machines. If the storage fails, requests are let through (with a log line):
a broken limiter must not take the service down.
"""

from __future__ import annotations

import json
import logging
import time

from flask import Flask
from flask import Response
from flask import g
from flask import request
from flask_limiter import Limiter
from limits import RateLimitItem
from limits import parse_many

from app.settings import Settings

logger = logging.getLogger(__name__)


def principal_key() -> str:
    principal = g.get("principal")
    if principal is not None:
        return f"principal:{principal.issuer}|{principal.sub}"
    return f"address:{request.remote_addr}"


def _unauthenticated() -> bool:
    return g.get("principal") is None


class FailedAuthenticationThrottle:
    """Counts refused credentials per client address, in the limiter's own storage."""

    def __init__(self, limiter: Limiter, limit: str) -> None:
        self._limiter = limiter
        self._items: list[RateLimitItem] = parse_many(limit)

    def refuse(self, address: str | None) -> int | None:
        """Count one refusal; the seconds to wait when this address is over its limit, else None."""
        strategy = self._limiter.limiter
        try:
            for item in self._items:
                if not strategy.hit(item, "failed-auth", address or "unknown"):
                    reset = strategy.get_window_stats(item, "failed-auth", address or "unknown").reset_time
                    return max(1, int(reset - time.time()) + 1)
        except Exception:
            logger.exception("rate limit storage failed; letting the request through")
        return None

    @staticmethod
    def response(retry_after: int) -> Response:
        body = {
            "error": "too_many_requests",
            "error_description": "Too many refused credentials from this address; retry later",
        }
        return Response(
            json.dumps(body), status=429, mimetype="application/json", headers={"Retry-After": str(retry_after)}
        )


class RateLimits:
    """The limiter of one app, and the throttle the authentication hook consults."""

    def __init__(self, settings: Settings) -> None:
        assert settings.rate_limit is not None
        self.settings = settings
        self.limiter = Limiter(key_func=principal_key, default_limits_exempt_when=_unauthenticated)
        self.throttle = FailedAuthenticationThrottle(self.limiter, settings.rate_limit_failed_auth)

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits | None:
        return cls(settings) if settings.rate_limit is not None else None

    def init_app(self, app: Flask) -> None:
        """Install the per-principal limit. Call it after the authentication hook: its key is the verified caller."""
        settings = self.settings
        app.config.update(
            RATELIMIT_STORAGE_URI=settings.rate_limit_storage,
            RATELIMIT_DEFAULT=settings.rate_limit,
            RATELIMIT_HEADERS_ENABLED=True,
            RATELIMIT_SWALLOW_ERRORS=True,
            RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
            RATELIMIT_KEY_PREFIX="mcp",
        )
        if settings.rate_limit_storage.startswith("memory://") and settings.workers > 1:
            logger.warning(
                "rate limits count per worker process with MCP_RATE_LIMIT_STORAGE=memory://; "
                "use redis://... to share them across %d workers",
                settings.workers,
            )
        self.limiter.init_app(app)
        app.extensions["mcp_rate_limits"] = self
