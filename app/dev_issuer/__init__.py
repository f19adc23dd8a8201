"""Development mode's own OAuth 2.1 authorization server (MCP_DEV=1), built on Authlib.

https://modelcontextprotocol.io/specification/2026-07-28/basic/authorization

With ``make run`` an OAuth-capable MCP client (Claude Code, MCP Inspector,
the SDK's client) goes through discovery, registration, consent and token
issue on this machine, exactly as against a production identity provider:

* :mod:`.metadata`: RFC 8414 metadata at the path-inserted well-known URL.
* :mod:`.registration`: RFC 7591 dynamic registration, public and confidential.
* :mod:`.client_metadata`: client ID metadata documents (a client_id that is a URL).
* :mod:`.grants`: authorization code + PKCE S256, refresh rotation, client credentials, RFC 8707.
* :mod:`.revocation`: RFC 7009, and a replayed code or refresh token revoking its grant; the
  resource server refuses revoked access tokens.
* :mod:`.tokens`: RFC 9068 JWT access tokens, signed with :mod:`.signing`'s key;
  DPoP-bound (RFC 9449) when the token request carries a valid proof.
* :mod:`.views`: the endpoints and the consent page; :mod:`.consent_forms`: its CSRF token.
* :mod:`.storage`: SQLite in the instance folder, so a restart keeps registrations.
* :mod:`.landing`: the page at ``/``.

None of this exists unless MCP_DEV=1, and development mode answers only this
machine (a loopback peer and a loopback Host; MCP_DEV_ALLOW_REMOTE=1 lets other
machines in).
"""

from __future__ import annotations

import logging
from pathlib import Path

from authlib.oauth2.rfc8414 import get_well_known_url
from flask import Flask
from mcp.server.mcpserver import MCPServer

from app.auth.dpop import Nonces
from app.auth.dpop import ProofVerifier
from app.auth.dpop import ReplayCache
from app.auth.scopes import ScopePolicy
from app.dev_issuer import landing
from app.dev_issuer.revocation import RevokedAccessTokens
from app.dev_issuer.revocation import RevokingValidator
from app.dev_issuer.scopes import ScopeCatalogue
from app.dev_issuer.server import DevAuthorizationServer
from app.dev_issuer.signing import DevIssuer
from app.dev_issuer.storage import DATABASE_FILE
from app.dev_issuer.storage import Storage
from app.dev_issuer.views import create_blueprint
from app.settings import Settings

__all__ = ["DevIssuer", "RevokedAccessTokens", "RevokingValidator", "init_app", "revoked_access_tokens"]

EXTENSION_KEY = "dev_issuer"


def revoked_access_tokens(instance_path: str) -> RevokedAccessTokens:
    """The revoked access tokens of the issuer whose database is in ``instance_path``: the resource
    server's validator refuses them, the authorization server adds to them."""
    return RevokedAccessTokens(Storage(Path(instance_path) / DATABASE_FILE))


def init_app(
    app: Flask,
    issuer: DevIssuer,
    settings: Settings,
    server: MCPServer,
    policy: ScopePolicy,
    replays: ReplayCache,
    revoked: RevokedAccessTokens | None = None,
) -> None:
    """Mount the authorization server and the landing page; call after every tool is registered.

    DPoP follows MCP_DPOP: off, a proof is ignored and tokens are Bearer; required, a token request
    without one is refused. Its proofs' jti values go to ``replays``, the resource server's cache.
    ``revoked`` is what the resource server's validator consults (:func:`revoked_access_tokens`).
    """
    revoked = revoked or revoked_access_tokens(app.instance_path)
    # Authlib logs every issued token, in full, at DEBUG: never let those lines through.
    logging.getLogger("authlib").setLevel(logging.INFO)
    proofs = None
    if settings.dpop != "off":
        nonces = Nonces(issuer.state_secret, "authorization server") if settings.dpop_nonce else None
        proofs = ProofVerifier.from_settings(settings, replays, nonces)
    authorization_server = DevAuthorizationServer(
        issuer, settings, ScopeCatalogue.build(settings.scopes_supported, policy), revoked, proofs
    )
    app.extensions[EXTENSION_KEY] = issuer
    app.extensions["dev_authorization_server"] = authorization_server
    app.register_blueprint(create_blueprint(authorization_server, issuer, settings))
    as_metadata_url = get_well_known_url(issuer.issuer, external=True, suffix="oauth-authorization-server")
    landing.init_app(app, settings, server, policy, as_metadata_url)
