"""RFC 9728 OAuth 2.0 Protected Resource Metadata: how a client finds our authorization server.

https://www.rfc-editor.org/rfc/rfc9728#section-3

Served at the path-inserted well-known URL (``/.well-known/oauth-protected-resource/mcp``
for ``https://host/mcp``, RFC 9728 section 3.1) and at the root form, the same
document at both. ``resource`` is MCP_RESOURCE_URL byte for byte: section 3.3
says a client MUST NOT use metadata whose resource differs from the URL it
used. Nothing in it comes from the request, so a proxy cannot skew it.
"""

from __future__ import annotations

import json
from typing import Any

from authlib.oauth2.rfc8414 import get_well_known_url
from flask import Blueprint
from flask import Flask
from flask import Response

from app.auth import public
from app.settings import Settings

WELL_KNOWN_SUFFIX = "oauth-protected-resource"
CACHE_CONTROL = "public, max-age=3600"


def metadata_url(settings: Settings) -> str:
    """The absolute URL of the document, as challenges advertise it (RFC 9728 section 5.1)."""
    return get_well_known_url(settings.resource_url, external=True, suffix=WELL_KNOWN_SUFFIX)


def metadata_document(settings: Settings) -> dict[str, Any]:
    document: dict[str, Any] = {
        "resource": settings.resource_url,
        "authorization_servers": list(settings.authorization_servers),
        "bearer_methods_supported": ["header"],
        "resource_name": settings.resource_name,
    }
    # RFC 9728 section 3.2: parameters with zero values MUST be omitted.
    if settings.scopes_supported:
        document["scopes_supported"] = list(settings.scopes_supported)
    if settings.dpop != "off":
        # RFC 9728 section 2 (from RFC 9449): the proof algorithms accepted, and whether every
        # token must be DPoP-bound; that one defaults to false and is omitted then.
        document["dpop_signing_alg_values_supported"] = list(settings.dpop_algorithms)
        if settings.dpop == "required":
            document["dpop_bound_access_tokens_required"] = True
    return document


def init_app(app: Flask, settings: Settings) -> None:
    body = json.dumps(metadata_document(settings), indent=2).encode()
    blueprint = Blueprint("protected_resource", __name__)

    @public
    def protected_resource_metadata() -> Response:
        return Response(body, mimetype="application/json", headers={"Cache-Control": CACHE_CONTROL})

    paths = {
        get_well_known_url(settings.resource_url, suffix=WELL_KNOWN_SUFFIX),
        f"/.well-known/{WELL_KNOWN_SUFFIX}",
    }
    for path in sorted(paths):
        blueprint.add_url_rule(path, view_func=protected_resource_metadata, strict_slashes=False)
    app.register_blueprint(blueprint)
