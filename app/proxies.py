"""Trusted reverse proxies: who may tell the server the client's address and scheme (werkzeug's ProxyFix).

X-Forwarded-For and -Proto are believed only from the configured number of hops
(MCP_TRUSTED_PROXIES; nginx on the same VM is one); with 0 they are ignored, so a
client cannot fake its address. The Host header is not taken from
X-Forwarded-Host: nginx passes the client's Host through, and public URLs come
from MCP_RESOURCE_URL anyway.
"""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from app.settings import Settings


def init_app(app: Flask, settings: Settings) -> None:
    """Wrap the WSGI app when settings trust a proxy; ``app`` stays a Flask object."""
    if settings.trusted_proxies:
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]  # Flask's way to add middleware
