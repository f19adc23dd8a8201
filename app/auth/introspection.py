"""RFC 7662 token introspection, for opaque (non-JWT) access tokens.

https://www.rfc-editor.org/rfc/rfc7662

Used when MCP_INTROSPECTION_URL is set and a token is not a JWT. The server
authenticates to the introspection endpoint with its own client credentials
(``client_secret_basic``, RFC 6749 section 2.3.1). Answers are cached by the
token's SHA-256: an active token until its ``exp`` (never longer than the
cache's own bound), an inactive one briefly, so a flood of the same bad token
does not become a flood of introspection calls. The endpoint being down means
the token can be neither accepted nor refused: 503, never a guess.
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
from app.auth.principal import DEFAULT_SCOPE_CLAIMS
from app.auth.principal import Principal

logger = logging.getLogger(__name__)

CACHE_SIZE = 10_000
MAX_CACHE_SECONDS = 3600
INACTIVE_CACHE_SECONDS = 30
TIMEOUT = 5.0
MAX_RESPONSE_BYTES = 64 * 1024


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
    ) -> None:
        self.url = url
        self._authorization = client_secret_basic(client_id, client_secret)
        self._issuers = tuple(issuers)
        self._audiences = Audiences(audiences)
        self._leeway = leeway
        self._scope_claims = scope_claims
        self._retry_after = retry_after
        self._clock = clock
        # digest -> (principal or None for an inactive token, cache entry expiry)
        self._answers: dict[bytes, tuple[Principal | None, float]] = {}
        self.calls = 0

    def validate(self, token: str) -> Principal:
        digest = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        cached = self._answers.get(digest)
        if cached is not None and cached[1] > now:
            if cached[0] is None:
                raise InvalidToken("The access token is not active")
            return cached[0]
        answer = self._introspect(token)
        try:
            principal = self._principal(answer, now)
        except InvalidToken:
            self._remember(digest, None, now + INACTIVE_CACHE_SECONDS)
            raise
        expires = principal.expires_at if principal.expires_at is not None else now + MAX_CACHE_SECONDS
        self._remember(digest, principal, min(expires, now + MAX_CACHE_SECONDS))
        return principal

    def _remember(self, digest: bytes, principal: Principal | None, until: float) -> None:
        if len(self._answers) >= CACHE_SIZE:
            self._answers.pop(next(iter(self._answers)), None)
        self._answers[digest] = (principal, until)

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
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
                data = response.read(MAX_RESPONSE_BYTES + 1)
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
        issuer = answer.get("iss", self._issuers[0])
        if issuer not in self._issuers:
            raise InvalidToken("The access token was issued by another issuer")
        # MCP: a server MUST only accept tokens issued for it; an answer without aud proves nothing.
        if not self._audiences.accepts(answer.get("aud")):
            raise InvalidToken("The access token was not issued for this resource")
        subject = answer.get("sub") or answer.get("client_id")
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("The access token has no subject")
        return Principal.from_claims({**answer, "iss": issuer, "sub": subject}, self._scope_claims)
