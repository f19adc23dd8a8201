"""RFC 9068 JWT access tokens from Authlib's generator, for this server's MCP resource.

https://www.rfc-editor.org/rfc/rfc9068#section-2.2
https://www.rfc-editor.org/rfc/rfc8707#section-2

Authlib's ``JWTBearerTokenGenerator`` puts the client_id in ``aud`` unless
told otherwise; RFC 8707 wants the requested resource there, and the grants
accept no resource but MCP_RESOURCE_URL, so ``aud`` is that URL. Refresh
tokens are only issued when a refresh token generator is passed, so one is.
"""

from __future__ import annotations

from typing import Any

from authlib.common.security import generate_token
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc.jwk import KeySet

from app.dev_issuer.signing import DevIssuer

REFRESH_TOKEN_LENGTH = 48


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
