"""CORS for browser-based MCP clients (flask-cors), configured from settings.

The MCP endpoint answers the origins the server trusts (its own, MCP_ALLOWED_ORIGINS,
loopback pages in development mode) with the MCP request headers allowed and the
challenge headers exposed; the discovery documents answer every origin; the
development authorization server answers loopback pages (MCP Inspector registers
and redeems codes with fetch()).

flask-cors decides in an after-request hook for every response, about 12
microseconds even when it adds nothing. On the MCP endpoint it adds nothing to a
request without an Origin header (``always_send`` is off there), which is what
every non-browser client sends: those requests skip the hook. Everything else,
preflights included, is flask-cors's.
"""

from __future__ import annotations

import re
from typing import Any
from typing import cast

from flask import Flask
from flask import Response
from flask import request
from flask_cors import CORS

from app.settings import DEV_ISSUER_PATH
from app.settings import Settings

MCP_REQUEST_HEADERS = [
    "Authorization",
    "Content-Type",
    "MCP-Protocol-Version",
    "Mcp-Method",
    "Mcp-Name",
    "Mcp-Session-Id",
    "Last-Event-ID",
    "DPoP",
]
MCP_RESPONSE_HEADERS = ["WWW-Authenticate", "Mcp-Session-Id", "DPoP-Nonce"]
DEV_LOOPBACK_ORIGINS = r"^https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?$"
_FLASK_CORS_HOOK = "cors_after_request"


def init_app(app: Flask, settings: Settings, *, mcp_endpoint: str = "mcp") -> None:
    resources: dict[str | re.Pattern[str], dict[str, Any]] = {}
    if settings.dev:
        resources[DEV_ISSUER_PATH + "/*"] = {
            "origins": [DEV_LOOPBACK_ORIGINS],
            "allow_headers": ["Authorization", "Content-Type", "DPoP"],
            "expose_headers": ["DPoP-Nonce"],
            "methods": ["GET", "POST"],
        }
    resources[r"/.well-known/*"] = {
        "origins": "*",
        "send_wildcard": True,
        "allow_headers": ["MCP-Protocol-Version"],
        "methods": ["GET"],
    }
    resources[settings.endpoint_path + "*"] = {
        "origins": [
            settings.public_origin,
            *settings.allowed_origins,
            *([DEV_LOOPBACK_ORIGINS] if settings.dev else []),
        ],
        "allow_headers": MCP_REQUEST_HEADERS,
        "expose_headers": MCP_RESPONSE_HEADERS,
        "methods": ["GET", "POST", "DELETE"],
        "always_send": False,  # no CORS headers for requests that carry no Origin
    }
    CORS(app, resources=resources, intercept_exceptions=False)
    _skip_requests_without_origin(app, mcp_endpoint)


def _skip_requests_without_origin(app: Flask, mcp_endpoint: str) -> None:
    hooks = app.after_request_funcs.setdefault(None, [])
    found = [i for i, hook in enumerate(hooks) if getattr(hook, "__name__", "") == _FLASK_CORS_HOOK]
    if len(found) != 1:
        raise RuntimeError(f"flask-cors registered {len(found)} after-request hooks named {_FLASK_CORS_HOOK!r}, not 1")
    flask_cors_hook = hooks[found[0]]

    def cors_after_request(response: Response) -> Response:
        req = request._get_current_object()  # type: ignore[attr-defined]  # Flask types the proxy as a Request
        if req.endpoint == mcp_endpoint and "HTTP_ORIGIN" not in req.environ:
            return response
        # flask-cors's hook is synchronous; Flask types after-request hooks as possibly async.
        return cast(Response, flask_cors_hook(response))

    hooks[found[0]] = cors_after_request
