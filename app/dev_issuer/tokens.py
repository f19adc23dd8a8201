"""RFC 9068 JWT access tokens from Authlib's generator, for this server's MCP resource.

https://www.rfc-editor.org/rfc/rfc9068#section-2.2
https://www.rfc-editor.org/rfc/rfc8707#section-2

Authlib's ``JWTBearerTokenGenerator`` puts the client_id in ``aud`` unless
told otherwise; RFC 8707 wants the requested resource there, and the grants
accept no resource but MCP_RESOURCE_URL, so ``aud`` is that URL. Refresh
tokens are only issued when a refresh token generator is passed, so one is.

A token request that carried a valid DPoP proof gets a token bound to the
proof's key: ``cnf.jkt`` and ``token_type: DPoP`` (RFC 9449 sections 5 and
6.1). Authlib's generator is called without the request, so the grant hands
the key's thumbprint over in :data:`dpop_binding` for the duration of the call.
"""

from __future__ import annotations

import base64
import json
from contextvars import ContextVar
from typing import Any

from authlib.common.security import generate_token
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc.jwk import KeySet

from app.dev_issuer.signing import DevIssuer

REFRESH_TOKEN_LENGTH = 48
#: The RFC 7638 thumbprint the access token being generated is bound to, set by the grant.
dpop_binding: ContextVar[str | None] = ContextVar("dpop_binding", default=None)


def _refresh_token(**_: Any) -> str:
    return generate_token(REFRESH_TOKEN_LENGTH)


class AccessTokenGenerator(JWTBearerTokenGenerator):
    """``typ: at+jwt`` tokens with iss, sub, aud, client_id, scope, iat, exp and jti, signed with the dev key."""

    def __init__(self, issuer: DevIssuer, *, lifetime: int) -> None:
        super().__init__(
            issuer=issuer.issuer,
            alg="RS256",
            refresh_token_generator=_refresh_token,
            expires_generator=lifetime,
        )
        self._keys: KeySet = issuer.key_set()
        self.resource_url = issuer.resource_url

    def get_jwks(self) -> KeySet:
        # A key set, so the header names the key's kid for the resource server.
        return self._keys

    def get_audiences(self, client: Any, user: Any, scope: Any) -> str:
        return self.resource_url

    def get_extra_claims(self, client: Any, grant_type: str, user: Any, scope: Any) -> dict[str, Any]:
        jkt = dpop_binding.get()
        # RFC 9449 section 6.1: the JWK SHA-256 thumbprint confirmation method.
        return {"cnf": {"jkt": jkt}} if jkt is not None else {}

    def generate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        token: dict[str, Any] = super().generate(*args, **kwargs)
        if dpop_binding.get() is not None:
            # RFC 9449 section 5: a token bound to the proof's key is answered with token_type DPoP.
            token["token_type"] = "DPoP"  # noqa: S105 (a token type)
        return token


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT this issuer has just signed (no need to verify its own signature)."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims
