"""An opt-in copy of the authorization server's RFC 8414 metadata at this server's origin (MCP_AS_METADATA_PROXY=1).

https://www.rfc-editor.org/rfc/rfc8414#section-3.3

Clients of the 2025-03-26 MCP revision look for authorization server metadata
at the MCP server's own origin (``/.well-known/oauth-authorization-server``)
instead of following RFC 9728. For them this serves the upstream issuer's
document, fetched and cached.

The trade-off: the document keeps the upstream ``issuer``, which is not this
origin. RFC 8414 section 3.3 tells a client to drop metadata whose issuer
differs from the one the URL was built from, so a strict client would refuse
this copy -- but strict clients never ask for it: they read
``authorization_servers`` from the protected resource metadata, which still
names the upstream issuer, and build the well-known URL from that. Rewriting
``issuer`` to our origin would instead make us pose as an authorization server
we are not, and break every strict client. So the copy is served verbatim.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time

from flask import Blueprint
from flask import Flask
from flask import Response

from app.auth import public
from app.auth.jwks import MetadataNotFound
from app.auth.jwks import discover_metadata
from app.errors import TemporarilyUnavailable
from app.settings import Settings

logger = logging.getLogger(__name__)


class MetadataCopy:
    """The upstream document, fetched at most once per TTL (and per cooldown after a failure)."""

    def __init__(self, issuer: str, ttl: int, cooldown: int) -> None:
        self._issuer = issuer
        self._ttl = ttl
        self._cooldown = cooldown
        self._body: bytes | None = None
        self._fetched_at = 0.0
        self._attempted_at = 0.0
        self._lock = threading.Lock()

    def body(self) -> bytes | None:
        now = time.monotonic()
        if (self._body is None or now - self._fetched_at >= self._ttl) and now - self._attempted_at >= self._cooldown:
            with self._lock:
                self._refresh(now)
        return self._body

    def retry_after(self) -> int:
        """Seconds until the next fetch may be tried: what is left of MCP_JWKS_REFETCH_COOLDOWN, at least 1."""
        return max(1, math.ceil(self._cooldown - (time.monotonic() - self._attempted_at)))

    def _refresh(self, now: float) -> None:
        self._attempted_at = now
        try:
            document = discover_metadata(self._issuer)
        except MetadataNotFound as error:
            logger.warning("authorization server metadata could not be fetched: %s", "; ".join(error.problems))
            return
        self._body = json.dumps(document, indent=2).encode()
        self._fetched_at = now


def init_app(app: Flask, settings: Settings) -> None:
    copy = MetadataCopy(settings.authorization_servers[0], settings.jwks_ttl, settings.jwks_refetch_cooldown)
    blueprint = Blueprint("authorization_server_metadata", __name__)

    @blueprint.get("/.well-known/oauth-authorization-server")
    @public
    def authorization_server_metadata() -> Response:
        body = copy.body()
        if body is None:
            return TemporarilyUnavailable(
                "The metadata could not be fetched", retry_after=copy.retry_after()
            ).response()
        return Response(body, mimetype="application/json", headers={"Cache-Control": "public, max-age=3600"})

    app.register_blueprint(blueprint)
