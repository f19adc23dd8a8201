"""Revoking what the development authorization server issued: RFC 7009, and grant families after a replay.

https://www.rfc-editor.org/rfc/rfc7009
https://www.rfc-editor.org/rfc/rfc6749#section-4.1.2 (a code used twice: "SHOULD revoke ... all tokens
previously issued based on that authorization code")
https://www.rfc-editor.org/rfc/rfc9700#section-4.14.2 (refresh token reuse: the grant is revoked)

Access tokens are JWTs: nothing about them changes when they are revoked, so
the resource server must ask. Here it is the same application, so it asks its
own store at no network cost: every access token is recorded (its ``jti``, its
grant family, its expiry) when it is issued, and :class:`RevokedAccessTokens`
keeps the set of revoked, unexpired ``jti`` values in memory, refreshed from
the database at most once a second (so a revocation made by another worker
process takes effect within a second, one made by this process at once).
:class:`RevokingValidator` refuses those tokens at the MCP endpoint, cached
verdicts included.

Revoking a refresh token (RFC 7009) revokes its whole grant: every refresh
token and access token of its family ("SHOULD also invalidate all access
tokens based on the same authorization grant", section 2.1). Revoking an
access token revokes that token. A confidential client authenticates as at the
token endpoint; a public client names itself with ``client_id``. Either may
revoke only its own tokens; an unknown or foreign-issuer token is answered 200
and nothing happens (section 2.2).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc7009 import RevocationEndpoint
from joserfc import jwt
from joserfc.errors import JoseError

from app.auth.challenges import InvalidToken
from app.auth.jwt_access_token import JWTAccessTokenValidator
from app.auth.principal import Principal
from app.dev_issuer.models import RefreshToken
from app.dev_issuer.models import digest
from app.dev_issuer.signing import DevIssuer
from app.dev_issuer.storage import Storage

if TYPE_CHECKING:
    from app.dev_issuer.server import DevAuthorizationServer

logger = logging.getLogger(__name__)

SYNC_INTERVAL = 1.0
REVOCATION_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]


class RevokedAccessTokens:
    """The ``jti`` of every revoked access token that has not expired, as this process knows it."""

    def __init__(
        self, storage: Storage, *, interval: float = SYNC_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.storage = storage
        self._interval = interval
        self._clock = clock
        self._jtis: frozenset[str] = frozenset()
        self._next_sync = float("-inf")
        self._lock = threading.Lock()

    def is_revoked(self, jti: object) -> bool:
        if self._clock() >= self._next_sync:
            self.sync()
        return jti in self._jtis

    def sync(self) -> None:
        """Read the revoked set from the database now (another worker may have revoked something)."""
        with self._lock:
            self._next_sync = self._clock() + self._interval
            self._jtis = frozenset(self.storage.revoked_access_tokens(int(time.time())))

    def add(self, jtis: Iterable[str]) -> None:
        """Revoked by this process: in effect here at once, whatever the next sync brings."""
        with self._lock:
            self._jtis = self._jtis | frozenset(jtis)


class RevokingValidator(JWTAccessTokenValidator):
    """The development issuer's validator: a token the issuer revoked is refused, however it was verified."""

    def __init__(self, *, revoked: RevokedAccessTokens, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._revoked = revoked

    def validate(self, token: str) -> Principal:
        principal = super().validate(token)
        if self._revoked.is_revoked(principal.claims.get("jti")):
            raise InvalidToken("The access token was revoked")
        return principal


@dataclass(frozen=True)
class IssuedAccessToken:
    """An access token this issuer signed, as RFC 7009's endpoint needs it (whose it is, when it ends)."""

    jti: str
    client_id: str
    expires_at: int

    def check_client(self, client: ClientMixin) -> bool:
        return bool(client.get_client_id() == self.client_id)


class TokenRevocationEndpoint(RevocationEndpoint):
    """RFC 7009 at ``/dev-issuer/revoke``."""

    CLIENT_AUTH_METHODS = REVOCATION_AUTH_METHODS
    SUPPORTED_TOKEN_TYPES = ("access_token", "refresh_token")
    server: DevAuthorizationServer

    def __init__(self, server: DevAuthorizationServer, issuer: DevIssuer, revoked: RevokedAccessTokens) -> None:
        super().__init__(server)
        self._issuer = issuer
        self._revoked = revoked

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        # Section 2.2: the hint only says where to look first.
        lookups = [self._access_token, self._refresh_token]
        if token_type_hint == "refresh_token":  # noqa: S105 (a token type)
            lookups.reverse()
        for lookup in lookups:
            found = lookup(token_string)
            if found is not None:
                return found
        return None

    def _access_token(self, token: str) -> IssuedAccessToken | None:
        if token.count(".") != 2:
            return None
        try:
            claims = jwt.decode(token, self._issuer.key, algorithms=["RS256"]).claims
        except (JoseError, ValueError, TypeError, KeyError):
            return None
        jti, client_id, exp = claims.get("jti"), claims.get("client_id"), claims.get("exp")
        if claims.get("iss") != self._issuer.issuer or not isinstance(jti, str) or not isinstance(client_id, str):
            return None
        return IssuedAccessToken(jti, client_id, int(exp) if isinstance(exp, int) else int(time.time()))

    def _refresh_token(self, token: str) -> RefreshToken | None:
        return self.server.storage.find(RefreshToken, digest(token))

    def revoke_token(self, token: Any, request: Any) -> None:
        storage, now = self.server.storage, int(time.time())
        if isinstance(token, RefreshToken):
            storage.revoke_family(token.family, now)
            self._revoked.sync()
            logger.info(
                "revoked a refresh token and its grant (RFC 7009): client_id=%r sub=%r", token.client_id, token.subject
            )
            return
        storage.revoke_access_token(token.jti, token.client_id, token.expires_at, now)
        self._revoked.add([token.jti])
        logger.info("revoked an access token (RFC 7009): client_id=%r jti=%r", token.client_id, token.jti)
