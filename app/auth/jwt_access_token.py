"""JWT access tokens (RFC 7519, RFC 9068), verified with joserfc against the cached keys.

https://www.rfc-editor.org/rfc/rfc9068#section-4
https://modelcontextprotocol.io/specification/2026-07-28/basic/authorization#token-handling

Two profiles:

* ``jwt`` (default): what most identity providers issue. ``typ`` may be
  ``at+jwt``, ``JWT`` or absent; ``client_id``, ``jti`` and ``iat`` are optional.
* ``rfc9068``: RFC 9068 section 4 in full: ``typ`` ``at+jwt`` and every
  claim of section 2.2 present.

Both always check the signature against an algorithm allow-list, ``iss``
(exact), ``aud`` (ours), ``exp``, ``nbf`` and ``sub``. A verified token is
remembered by its SHA-256 until it expires, so a client that sends the same
token again costs a dictionary lookup, not a signature check; a remembered
verdict dies with its key, once a refreshed key set no longer holds it.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.errors import ExceededSizeError
from joserfc.errors import ExpiredTokenError
from joserfc.errors import InvalidClaimError
from joserfc.errors import JoseError
from joserfc.errors import MissingClaimError
from joserfc.errors import SecurityWarning
from joserfc.errors import UnsupportedAlgorithmError
from joserfc.jwk import GuestProtocol
from joserfc.jwk import Key
from joserfc.jws import JWSRegistry

from app.auth.challenges import InvalidToken
from app.auth.jwks import KeyStore
from app.auth.principal import DEFAULT_SCOPE_CLAIMS
from app.auth.principal import Principal

# RFC 9068 section 4: the resource server MUST reject any JWT whose alg is "none";
# symmetric algorithms make no sense with a public JWK Set (fastmcp PR #3430).
ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA", "Ed25519")

# RFC 9864 renames EdDSA to Ed25519; identity providers still sign with "EdDSA",
# which we accept knowingly, so joserfc's per-token deprecation warning is noise.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
LENIENT_TYPES = ACCESS_TOKEN_TYPES | {"jwt"}

CACHE_SIZE = 10_000


def normalize_audience(value: str) -> str:
    """Lower-case scheme and host and drop one trailing slash; opaque values only lose the slash.

    MCP: implementations SHOULD accept uppercase scheme and host components;
    the path is compared byte for byte.
    """
    value = value.removesuffix("/")
    parts = urlsplit(value)
    if parts.scheme.lower() in ("http", "https") and parts.netloc:
        return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, parts.fragment))
    return value


class Audiences:
    """The audiences this resource accepts, each compared by :func:`normalize_audience`.

    The one comparison of an ``aud`` (a JWT claim, RFC 7519 section 4.1.3, or an
    introspection answer's member, RFC 7662 section 2.2) with ours.
    """

    __slots__ = ("_accepted",)

    def __init__(self, audiences: Iterable[str]) -> None:
        self._accepted = frozenset(normalize_audience(a) for a in audiences)

    def accepts(self, aud: object) -> bool:
        """Whether ``aud``, one string or a list of them, names an accepted audience."""
        values = [aud] if isinstance(aud, str) else aud
        return isinstance(values, list) and any(
            isinstance(v, str) and normalize_audience(v) in self._accepted for v in values
        )


# joserfc's descriptions of a well-typed claim with an unacceptable value.
_TIME_PROBLEMS = {
    "The token is not yet valid": "The access token is not valid yet",
    "The token was issued in the future": "The access token was issued in the future",
}


def _claim_problem(error: InvalidClaimError, claims: dict[str, Any]) -> str:
    if error.description in _TIME_PROBLEMS:
        return _TIME_PROBLEMS[error.description]
    if error.claim == "iss" and isinstance(claims.get("iss"), str):
        return "The access token was issued by another issuer"
    return f"The access token has an invalid {error.claim} claim"


class JWTAccessTokenValidator:
    """Turns a bearer token into a :class:`Principal`, or raises :class:`InvalidToken`."""

    def __init__(
        self,
        *,
        issuer: str,
        audiences: Iterable[str],
        keys: KeyStore,
        profile: str = "jwt",
        leeway: int = 30,
        scope_claims: tuple[str, ...] = DEFAULT_SCOPE_CLAIMS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self._scope_claims = scope_claims
        self._audiences = Audiences(audiences)
        self._keys = keys
        self._strict = profile == "rfc9068"
        self._leeway = leeway
        self._clock = clock
        # Extra header members some providers add (Entra's "nonce") are allowed;
        # "crit" is still enforced, and jku/x5u/jwk are never used to find a key.
        self._registry = JWSRegistry(algorithms=ALLOWED_ALGORITHMS, strict_check_header=False)
        essential = {"essential": True}
        options: dict[str, Any] = {"iss": {"essential": True, "value": issuer}, "sub": essential, "exp": essential}
        if self._strict:
            options.update(client_id=essential, iat=essential, jti=essential)
        self._claims_registry = jwt.JWTClaimsRegistry(now=self._now, leeway=leeway, **options)
        # digest -> (principal, the key that verified it, its kid, the key set's generation then)
        self._verified: dict[bytes, tuple[Principal, Key, str | None, int]] = {}

    def _now(self) -> int:
        return int(self._clock())

    def validate(self, token: str) -> Principal:
        digest = hashlib.sha256(token.encode()).digest()
        entry = self._verified.get(digest)
        if entry is not None:
            principal = entry[0]
            keys = self._keys
            keys.check_ttl()
            if entry[3] != keys.generation and not self._still_trusted(digest, entry):
                pass  # its key left the set: verified again below, against the keys there are now
            elif principal.expires_at is not None and principal.expires_at > self._now() - self._leeway:
                return principal
            else:
                self._verified.pop(digest, None)
                raise InvalidToken("The access token expired")
        used: list[tuple[Key, str | None]] = []
        principal = self._verify(token, used)
        if len(self._verified) >= CACHE_SIZE:
            # Drop the oldest entry; dicts keep insertion order.
            self._verified.pop(next(iter(self._verified)), None)
        key, kid = used[-1]
        self._verified[digest] = (principal, key, kid, self._keys.generation)
        return principal

    def _still_trusted(self, digest: bytes, entry: tuple[Principal, Key, str | None, int]) -> bool:
        """After the key set changed: whether the key that verified this entry is still in it.

        A verdict lives no longer than its key: a key the authorization server
        withdrew (rotated out, or compromised) stops vouching for the tokens it
        signed as soon as this server has the new set.
        """
        principal, key, kid, _ = entry
        if self._keys.current(kid) is key:
            self._verified[digest] = (principal, key, kid, self._keys.generation)
            return True
        self._verified.pop(digest, None)
        return False

    def _resolve_key(self, obj: GuestProtocol, used: list[tuple[Key, str | None]]) -> Key:
        kid = obj.headers().get("kid")
        try:
            key = self._keys.find(kid)
        except LookupError:
            raise InvalidToken("The access token is signed with an unknown key") from None
        used.append((key, kid))
        return key

    def _verify(self, token: str, used: list[tuple[Key, str | None]]) -> Principal:
        if token.count(".") != 2:
            if token.count(".") == 4:
                raise InvalidToken("Encrypted access tokens (JWE) are not accepted")
            raise InvalidToken("The access token is not a JWT")
        try:
            decoded = jwt.decode(
                token, lambda obj: self._resolve_key(obj, used), algorithms=ALLOWED_ALGORITHMS, registry=self._registry
            )
        except InvalidToken:
            raise
        except UnsupportedAlgorithmError:
            raise InvalidToken("The access token is signed with an algorithm that is not allowed") from None
        except BadSignatureError:
            raise InvalidToken("The access token signature is invalid") from None
        except ExceededSizeError:
            raise InvalidToken("The access token is too large") from None
        except (JoseError, ValueError, TypeError, KeyError):
            raise InvalidToken("The access token is malformed") from None

        typ = decoded.header.get("typ")
        allowed_types = ACCESS_TOKEN_TYPES if self._strict else LENIENT_TYPES
        if typ is None and not self._strict:
            pass
        elif not isinstance(typ, str) or typ.lower() not in allowed_types:
            # RFC 9068 section 4: reject tokens whose typ is not at+jwt.
            raise InvalidToken("The access token has the wrong type (typ)")

        claims = decoded.claims
        try:
            self._claims_registry.validate(claims)
        except ExpiredTokenError:
            raise InvalidToken("The access token expired") from None
        except MissingClaimError as exc:
            missing = exc.claim.split(",")
            if len(missing) == 1:
                raise InvalidToken(f"The access token lacks the {missing[0]} claim") from None
            raise InvalidToken(f"The access token lacks the claims {', '.join(missing)}") from None
        except InvalidClaimError as exc:
            raise InvalidToken(_claim_problem(exc, claims)) from None
        except JoseError:
            raise InvalidToken("The access token claims are invalid") from None

        # MCP: servers MUST validate that access tokens were issued specifically
        # for them as the intended audience (RFC 8707 section 2).
        if not self._audiences.accepts(claims.get("aud")):
            raise InvalidToken("The access token was not issued for this resource")
        if self._strict and not isinstance(claims.get("client_id"), str):
            raise InvalidToken("The access token has an invalid client_id claim")
        return Principal.from_claims(claims, self._scope_claims)
