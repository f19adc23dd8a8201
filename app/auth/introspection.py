"""RFC 7662 token introspection, for opaque (non-JWT) access tokens.

https://www.rfc-editor.org/rfc/rfc7662

Used when MCP_INTROSPECTION_URL is set and a token is not a JWT. The server
authenticates to the introspection endpoint with its own client credentials
(``client_secret_basic``, RFC 6749 section 2.3.1) and follows no redirect
(:mod:`app.auth.outbound`). Answers are cached by the token's SHA-256: an
active token until its ``exp`` (never longer than the cache's own bound); a
refused one briefly, in a cache of its own, so a flood of the same bad token
does not become a flood of introspection calls and a flood of different junk
tokens cannot push a real user's answer out. Before a call is made, the
failed-credentials limit is asked (``before_call``): a client past it gets 429
without the authorization server hearing of its token. The endpoint being down
means the token can be neither accepted nor refused: 503, never a guess.

An answer is accepted only when it describes an access token issued for this
resource by a trusted issuer, to a known subject: ``active`` true, a
``token_type`` (if any) of an access token, ``iss`` one of MCP_ISSUER (RFC 7662
makes it optional; without it the answer would say nothing of who vouches for
the token), ``aud`` ours, and ``sub`` present (``client_id`` is never taken for
it: a client and a user of the same name would share one identity).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

from app.auth.challenges import InvalidToken
from app.auth.challenges import VerifierUnavailable
from app.auth.jwt_access_token import Audiences
from app.auth.outbound import open_url
from app.auth.principal import DEFAULT_SCOPE_CLAIMS
from app.auth.principal import Principal

logger = logging.getLogger(__name__)

CACHE_SIZE = 10_000
REFUSED_CACHE_SIZE = 4096
MAX_CACHE_SECONDS = 3600
INACTIVE_CACHE_SECONDS = 30
TIMEOUT = 5.0
MAX_RESPONSE_BYTES = 64 * 1024
# RFC 7662 section 2.2 token_type (RFC 6749 section 7.1 types, or RFC 8693 token type URIs) of an access token.
ACCESS_TOKEN_TYPES = frozenset(
    {"bearer", "dpop", "access_token", "urn:ietf:params:oauth:token-type:access_token", "n_a"}
)
# What some servers (Keycloak) put in typ for tokens that are not access tokens.
NOT_ACCESS_TOKEN_TYP = frozenset({"refresh", "offline", "id", "id_token", "refresh_token", "logout"})


class IntrospectionUnavailable(VerifierUnavailable):
    """The introspection endpoint did not answer usably: the token cannot be judged now."""

    cause = "the token introspection endpoint did not answer usably"
    reason = "introspection_unavailable"


def client_secret_basic(client_id: str, client_secret: str) -> str:
    """RFC 6749 section 2.3.1: both parts form-urlencoded, then Basic."""
    pair = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


class TokenIntrospection:
    def __init__(
        self,
        *,
        url: str,
        client_id: str,
        client_secret: str,
        issuers: Iterable[str],
        audiences: Iterable[str],
        leeway: int = 30,
        scope_claims: tuple[str, ...] = DEFAULT_SCOPE_CLAIMS,
        retry_after: int = 30,
        clock: Callable[[], float] = time.time,
        before_call: Callable[[], None] | None = None,
    ) -> None:
        """``before_call`` runs before each call to the endpoint and may refuse it by raising."""
        self.url = url
        self._authorization = client_secret_basic(client_id, client_secret)
        self._issuers = tuple(issuers)
        self._audiences = Audiences(audiences)
        self._leeway = leeway
        self._scope_claims = scope_claims
        self._retry_after = retry_after
        self._clock = clock
        self._before_call = before_call
        # digest -> (principal, cache entry expiry): accepted tokens only.
        self._answers: dict[bytes, tuple[Principal, float]] = {}
        # digest -> (why it was refused, cache entry expiry): bounded on its own, so junk never evicts the above.
        self._refused: dict[bytes, tuple[str, float]] = {}
        self.calls = 0

    def validate(self, token: str) -> Principal:
        digest = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        cached = self._answers.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        refused = self._refused.get(digest)
        if refused is not None and refused[1] > now:
            raise InvalidToken(refused[0])
        if self._before_call is not None:
            self._before_call()
        answer = self._introspect(token)
        try:
            principal = self._principal(answer, now)
        except InvalidToken as error:
            _remember(self._refused, REFUSED_CACHE_SIZE, digest, (error.description, now + INACTIVE_CACHE_SECONDS))
            raise
        self._refused.pop(digest, None)
        expires = principal.expires_at if principal.expires_at is not None else now + MAX_CACHE_SECONDS
        _remember(self._answers, CACHE_SIZE, digest, (principal, min(expires, now + MAX_CACHE_SECONDS)))
        return principal

    def _introspect(self, token: str) -> dict[str, Any]:
        self.calls += 1
        body = urllib.parse.urlencode({"token": token, "token_type_hint": "access_token"}).encode()
        request = urllib.request.Request(  # noqa: S310 (URL from settings, https checked there)
            self.url,
            data=body,
            headers={
                "Authorization": self._authorization,
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
        )
        try:
            data = open_url(request, TIMEOUT, MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as error:
            error.close()
            logger.error("token introspection answered HTTP %s", error.code)
            raise IntrospectionUnavailable(self._retry_after) from None
        except (OSError, ValueError) as error:
            logger.error("token introspection failed: %s", error)
            raise IntrospectionUnavailable(self._retry_after) from None
        try:
            answer = json.loads(data) if len(data) <= MAX_RESPONSE_BYTES else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            logger.error("token introspection answered something that is not a JSON object")
            raise IntrospectionUnavailable(self._retry_after)
        return answer

    def _principal(self, answer: dict[str, Any], now: float) -> Principal:
        # RFC 7662 section 2.2: "active" is REQUIRED; anything but true means not usable.
        if answer.get("active") is not True:
            raise InvalidToken("The access token is not active")
        exp = answer.get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool) and exp <= now - self._leeway:
            raise InvalidToken("The access token expired")
        nbf = answer.get("nbf")
        if isinstance(nbf, int | float) and not isinstance(nbf, bool) and nbf > now + self._leeway:
            raise InvalidToken("The access token is not valid yet")
        token_type = answer.get("token_type")
        typ = answer.get("typ")
        if (token_type is not None and str(token_type).lower() not in ACCESS_TOKEN_TYPES) or (
            isinstance(typ, str) and typ.lower() in NOT_ACCESS_TOKEN_TYP
        ):
            raise InvalidToken("The token is not an access token")
        issuer = answer.get("iss")
        if issuer is None:
            raise InvalidToken("The introspection answer names no issuer (iss)")
        if issuer not in self._issuers:
            raise InvalidToken("The access token was issued by another issuer")
        # MCP: a server MUST only accept tokens issued for it; an answer without aud proves nothing.
        if not self._audiences.accepts(answer.get("aud")):
            raise InvalidToken("The access token was not issued for this resource")
        subject = answer.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("The access token has no subject")
        return Principal.from_claims(answer, self._scope_claims)


def _remember(cache: dict[bytes, Any], size: int, digest: bytes, entry: Any) -> None:
    """Keep ``entry``, dropping the oldest one when the cache is full (dicts keep insertion order)."""
    if len(cache) >= size and digest not in cache:
        cache.pop(next(iter(cache)), None)
    cache[digest] = entry
