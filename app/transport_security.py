"""Origin and Host checks on the MCP endpoint: the Streamable HTTP transport's DNS-rebinding defence.

MCP 2026-07-28, Streamable HTTP, Security Warning: "Servers MUST validate the
Origin header on all incoming connections"; "If the Origin header is present
and invalid, servers MUST respond with HTTP 403 Forbidden". Both checks run
before authentication: a page on another origin learns nothing, not even
whether a token would have been accepted. A request without an Origin header
(a server-side client, curl) passes.

In development mode two more checks run first, on every path: the peer must be
this machine (the development authorization server issues tokens to anyone),
and the Host must be a loopback name on the server's own port.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from flask import Flask
from flask import Response
from flask import request

from app.errors import Forbidden
from app.errors import JSONError
from app.settings import Settings
from app.urls import is_loopback_host

logger = logging.getLogger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443}
HOST_CACHE_SIZE = 256
_FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


# This module's own refusals, as app.metrics keeps its own; both are branches of the one tree in app.errors.
class ForbiddenOrigin(Forbidden):
    """MCP Streamable HTTP: "If the Origin header is present and invalid, servers MUST respond with 403"."""

    error = "forbidden_origin"


class MisdirectedRequest(JSONError):
    """RFC 9110 section 15.5.20 (421): this server does not serve the requested host."""

    status_code = 421
    error = "misdirected_request"


class TransportSecurity:
    def __init__(self, settings: Settings, mcp_endpoint: str = "mcp") -> None:
        resource = urlsplit(settings.resource_url)
        self._host = (resource.hostname or "").lower()
        self._port = resource.port or _DEFAULT_PORTS[resource.scheme]
        self._dev = settings.dev
        self._resource_url = settings.resource_url
        own_origin = settings.public_origin.lower()
        self._origins = frozenset({own_origin, *settings.allowed_origins})
        self._mcp_endpoint = mcp_endpoint
        self._hosts: dict[str, bool] = {}
        self._allow_remote = settings.dev_allow_remote
        self._trusted_proxies = settings.trusted_proxies

    def origin_allowed(self, origin: str) -> bool:
        origin = origin.lower()
        if origin in self._origins:
            return True
        # In development, browser-based tools on this machine (MCP Inspector) may call in.
        parts = urlsplit(origin)
        return self._dev and parts.scheme in ("http", "https") and is_loopback_host(parts.hostname)

    def host_allowed(self, host: str) -> bool:
        try:
            parts = urlsplit("//" + host)
            hostname, port = (parts.hostname or "").lower(), parts.port
        except ValueError:
            return False
        # Development mode answers on any loopback name (localhost, 127.0.0.1, [::1]), on its own port.
        name_matches = is_loopback_host(hostname) if self._dev else hostname == self._host
        return name_matches and (port is None or port == self._port)

    def _known_host(self, host: str) -> bool:
        """``host_allowed``, remembered: a server sees few distinct Host values, and parsing one costs."""
        allowed = self._hosts.get(host)
        if allowed is None:
            allowed = self.host_allowed(host)
            if len(self._hosts) >= HOST_CACHE_SIZE:
                self._hosts.clear()
            self._hosts[host] = allowed
        return allowed

    def check(self) -> Response | None:
        req = request._get_current_object()  # type: ignore[attr-defined]  # Flask types the proxy as a Request
        if req.endpoint != self._mcp_endpoint:
            return None
        origin = req.environ.get("HTTP_ORIGIN")
        if origin is not None and not self.origin_allowed(origin):
            logger.info("refused %s %s: origin %r is not allowed", req.method, req.path, origin[:100])
            return ForbiddenOrigin("Requests from this origin are not allowed").response()
        host = req.host
        if not self._known_host(host):
            logger.info("refused %s %s: host %r is not this server", req.method, req.path, host[:100])
            return MisdirectedRequest("This server does not serve the requested host").response()
        return None

    def check_development_peer(self) -> Response | None:
        """Development mode, every path: only this machine may talk to the server (unless MCP_DEV_ALLOW_REMOTE=1).

        The development server mints tokens for anyone who asks and registers any
        client, so it must not answer another machine, even when it is bound to
        every interface (a container's published port, ``--host 0.0.0.0``). The
        judge is the TCP peer's address (``REMOTE_ADDR``; with MCP_TRUSTED_PROXIES
        the address those proxies name, through ProxyFix), never the Host header,
        which any client writes as it likes. A request a proxy forwarded
        (``X-Forwarded-For``, ``Forwarded``) without MCP_TRUSTED_PROXIES comes from
        wherever that proxy took it: refused too.
        """
        environ = request.environ
        peer = environ.get("REMOTE_ADDR")
        forwarded = not self._trusted_proxies and any(name in environ for name in _FORWARDING_HEADERS)
        # A unix socket has no address: its peer is a process on this machine.
        if self._allow_remote or ((not peer or is_loopback_host(peer)) and not forwarded):
            return None
        logger.warning(
            "refused %s %s from %s: development mode answers this machine only (MCP_DEV_ALLOW_REMOTE=1 to allow)",
            request.method,
            request.path,
            f"{peer} via a proxy" if forwarded else peer,
        )
        return Forbidden(
            "Development mode (MCP_DEV=1) answers requests from this machine only: its authorization server "
            "issues tokens to anyone who asks. To let other machines in, knowing that, set MCP_DEV_ALLOW_REMOTE=1",
        ).response()

    def check_development_host(self) -> Response | None:
        """Development mode, every path: only loopback hosts, and only on the port every URL names.

        The landing page, the metadata and the authorization server all name
        MCP_RESOURCE_URL's origin: a request that reached the server on another
        port (``flask run --port`` with MCP_RESOURCE_URL still naming the
        default, say) is told where the server says it is, instead of being
        handed URLs that lead elsewhere. Any other host is a DNS-rebinding
        attempt: a web page must not reach the authorization server.
        """
        if self.host_allowed(request.host):
            return None
        host = request.host[:100]
        logger.warning(
            "refused %s %s: host %r does not match %s", request.method, request.path, host, self._resource_url
        )
        try:
            loopback = is_loopback_host(urlsplit("//" + request.host).hostname)
        except ValueError:
            loopback = False
        if not loopback:
            description = f"Development mode answers loopback hosts only; this server is {self._resource_url}"
        else:
            description = (
                f"This development server is configured for {self._resource_url} (MCP_RESOURCE_URL), but the "
                f"request was sent to {host}: connect to that URL, or set MCP_RESOURCE_URL to the one clients use"
            )
        return MisdirectedRequest(description).response()


def init_app(app: Flask, settings: Settings) -> None:
    security = TransportSecurity(settings)
    if settings.dev and settings.dev_allow_remote:
        logger.warning(
            "MCP_DEV_ALLOW_REMOTE=1: this development server answers other machines too; anyone who can reach it "
            "can register a client and get tokens from its authorization server"
        )
    if settings.dev:
        app.before_request(security.check_development_peer)
        app.before_request(security.check_development_host)
    app.before_request(security.check)
