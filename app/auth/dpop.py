"""RFC 9449 OAuth 2.0 Demonstrating Proof of Possession (DPoP): access tokens only their client can use.

https://www.rfc-editor.org/rfc/rfc9449

A bearer token copied from a log, a proxy or a compromised client works for
anyone until it expires. A DPoP-bound token names, in ``cnf.jkt``, the RFC 7638
thumbprint of a key only its client holds, and every request carries a fresh
proof (a ``dpop+jwt`` signed with that key) over the method, the URL and the
token's hash. A stolen token alone is then useless, and so is a stolen proof
once its ``jti`` was seen.

The protocol lives here once, for both roles this server plays:

* :class:`ProofVerifier`: the checks of section 4.3 on one proof, against a
  method and the endpoint's public URL from settings (never the Host header),
  with the ``jti`` replay cache of section 11.1 and, when enabled, the server
  nonces of sections 8 and 9.
* :class:`ProtectedResourceDPoP`: section 7 at the resource server (the DPoP
  scheme, its proof and the key binding) and section 7.2 (a bound token sent
  as a bearer token is refused).
* The development authorization server checks token requests (section 5)
  with its own :class:`ProofVerifier`.

Authlib 1.9.9 and joserfc 1.8 have no DPoP support, so this is built on
joserfc's JWS algorithms and JWK import. It is cheap per request: a proof's
protected header (``typ``, ``alg`` and ``jwk``, the same on every proof a client
sends) is checked, and its key imported and thumbprinted, once, then found by
the header's exact bytes; what remains per proof is one signature check, one
small JSON parse and one replay-cache write. A plain Bearer request with an
unbound token never reaches this module.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any
from typing import NamedTuple
from typing import Protocol
from typing import cast
from urllib.parse import urlsplit

from flask import Flask
from flask import Response
from flask import g
from flask import request
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry
from joserfc.jwk import Key
from joserfc.jws import JWSAlgModel  # type: ignore[attr-defined]  # joserfc.jws imports it but leaves it out of __all__
from joserfc.jws import JWSRegistry
from joserfc.util import json_b64decode
from joserfc.util import urlsafe_b64decode
from limits.storage import storage_from_string

from app.auth.bearer import BEARER
from app.auth.bearer import DPOP
from app.auth.challenges import InvalidDPoPProof
from app.auth.challenges import InvalidToken
from app.auth.challenges import UseDPoPNonce

if TYPE_CHECKING:
    from limits.storage import RedisStorage
    from redis import Redis

    from app.auth.principal import Principal
    from app.settings import Settings

logger = logging.getLogger(__name__)

#: A proof carries one public key; an RSA-4096 one makes a proof of about 1.6 KB.
MAX_PROOF_LENGTH = 8192
MAX_JTI_LENGTH = 256
MIN_RSA_BITS = 2048
KEY_CACHE_SIZE = 1024
REPLAY_CACHE_SIZE = 100_000
#: Seconds a server nonce stays good; a fresh one rides on a success once half of that has passed.
NONCE_LIFETIME = 300
REPLAY_KEY_PREFIX = "mcp:dpop:jti:"
STORAGE_ERROR_LOG_INTERVAL = 60.0
# RFC 7518 section 6: the members that make a JWK private (RSA, EC and OKP "d"; "k" of a symmetric key).
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MALFORMED = "The DPoP proof is not a well-formed JWT"


class ProofError(Exception):
    """A DPoP proof that section 4.3 says to refuse; the message names the check that failed."""


class NonceRequired(ProofError):
    """Sections 8 and 9: the proof lacks the server's current nonce; ``nonce`` is the one to use."""

    def __init__(self, message: str, nonce: str) -> None:
        super().__init__(message)
        self.nonce = nonce


def confirmed_key(claims: Mapping[str, Any]) -> str | None:
    """Section 6.1: the JWK thumbprint a token's ``cnf`` claim binds it to, or None when unbound.

    A ``cnf`` this server cannot check (another confirmation method, such as an
    RFC 8705 certificate thumbprint, or a malformed one) makes the token
    unusable here: accepting it as a bearer token would drop the binding.
    """
    cnf = claims.get("cnf")
    if cnf is None:
        return None
    if not isinstance(cnf, dict):
        raise InvalidToken("The access token has an invalid cnf claim")
    jkt = cnf.get("jkt")
    if jkt is None:
        raise InvalidToken("The access token is bound to a key in a way this server cannot check (cnf)")
    if not isinstance(jkt, str) or not jkt:
        raise InvalidToken("The access token has an invalid cnf claim")
    return jkt


def access_token_hash(token: str) -> str:
    """Section 4.2 ``ath``: the base64url SHA-256 of the ASCII access token, without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()


def normalize_htu(url: str) -> str | None:
    """An ``htu`` in the form it is compared in, or None when it is no http(s) URL.

    Section 4.3: servers SHOULD employ syntax-based and scheme-based
    normalization (RFC 3986 sections 6.2.2 and 6.2.3) before comparing htu.
    Scheme and host are lower-cased, a default port is dropped, the query and
    fragment are ignored (check 9) and one trailing slash is dropped, since the
    MCP endpoint answers at its path with or without one.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in ("http", "https") or not host or parts.username is not None:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != (443 if scheme == "https" else 80):
        host = f"{host}:{port}"
    path = parts.path or "/"
    if len(path) > 1:
        path = path.removesuffix("/")
    return f"{scheme}://{host}{path}"


class ReplayCache(Protocol):
    def first_use(self, key: bytes, ttl: int) -> bool:
        """Remember ``key`` for ``ttl`` seconds; False when it is already remembered (a replay)."""
        ...


class MemoryReplayCache:
    """The proofs seen by this worker process, each forgotten once it could no longer be accepted.

    Every entry lives as long (the acceptance window), so entries expire in the
    order they were added and expired ones are dropped from the front, a few
    per call. Bounded: past ``capacity`` live entries (about 1,100 proofs a
    second per worker for a 90 s window, more than a worker serves) the oldest
    is dropped and a warning logged.
    """

    def __init__(self, capacity: int = REPLAY_CACHE_SIZE, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = capacity
        self._clock = clock
        self._seen: dict[bytes, float] = {}
        self._lock = threading.Lock()
        self._last_overflow_log = float("-inf")

    def __len__(self) -> int:
        return len(self._seen)

    def first_use(self, key: bytes, ttl: int) -> bool:
        now = self._clock()
        with self._lock:
            seen = self._seen
            while seen:
                oldest = next(iter(seen))
                if seen[oldest] > now:
                    break
                del seen[oldest]
            if key in seen:
                return False
            if len(seen) >= self._capacity:
                del seen[next(iter(seen))]
                if now - self._last_overflow_log >= STORAGE_ERROR_LOG_INTERVAL:
                    self._last_overflow_log = now
                    logger.warning("DPoP replay cache full (%d proofs): forgetting the oldest early", self._capacity)
            seen[key] = now + ttl
            return True


class RedisReplayCache:
    """The proofs seen by every worker and instance that share the rate limits' Redis: ``SET NX EX``.

    One round trip per DPoP request. If Redis fails, replays are checked in
    this worker's memory until it is back, with a log line: a broken cache must
    not take the service down, nor let every replay through.
    """

    def __init__(self, uri: str, fallback: MemoryReplayCache | None = None) -> None:
        # limits types its factory for sync and async storages alike, and the connection as a three-method
        # protocol: a redis URI gives a RedisStorage whose connection is a redis-py client.
        self._client = cast("Redis", cast("RedisStorage", storage_from_string(uri)).get_connection())
        self._fallback = fallback or MemoryReplayCache()
        self._last_error_log = float("-inf")

    def first_use(self, key: bytes, ttl: int) -> bool:
        try:
            return bool(self._client.set(REPLAY_KEY_PREFIX + key.hex(), b"1", nx=True, ex=ttl))
        except Exception:
            now = time.monotonic()
            if now - self._last_error_log >= STORAGE_ERROR_LOG_INTERVAL:
                self._last_error_log = now
                logger.exception("DPoP replay cache storage failed; checking replays in this worker only")
            return self._fallback.first_use(key, ttl)


def replay_cache(storage_uri: str) -> ReplayCache:
    """Where ``jti`` values are remembered: the storage MCP_RATE_LIMIT_STORAGE names."""
    if storage_uri.startswith("memory://"):
        return MemoryReplayCache()
    return RedisReplayCache(storage_uri)


class Nonces:
    """Server-provided nonces (sections 8 and 9), stateless so that any worker accepts any worker's.

    A nonce is its issue time and an HMAC of it under a key derived from the
    shared state secret, so it cannot be forged or extended; ``label`` keeps the
    authorization server's nonces and the resource server's apart (section 9:
    a nonce is only accepted by the server that issued it).
    """

    def __init__(
        self, secret: str, label: str, *, lifetime: int = NONCE_LIFETIME, clock: Callable[[], float] = time.time
    ) -> None:
        self._key = hmac.new(secret.encode(), b"dpop-nonce\n" + label.encode(), hashlib.sha256).digest()
        self.lifetime = lifetime
        self._clock = clock

    def _mac(self, issued: bytes) -> bytes:
        return hmac.new(self._key, issued, hashlib.sha256).digest()[:16]

    def issue(self) -> str:
        issued = int(self._clock()).to_bytes(8, "big")
        # nonce = 1*NQCHAR (section 8.1): base64url qualifies.
        return base64.urlsafe_b64encode(issued + self._mac(issued)).rstrip(b"=").decode()

    def age(self, nonce: str) -> float | None:
        """Seconds since ``nonce`` was issued, or None when it is not ours or too old."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except ValueError:
            return None
        if len(raw) != 24 or not hmac.compare_digest(raw[8:], self._mac(raw[:8])):
            return None
        age = self._clock() - int.from_bytes(raw[:8], "big")
        return age if -5 <= age <= self.lifetime else None


def _json_object(segment: str) -> dict[str, Any]:
    """A proof's header or payload: base64url-encoded JSON that must be an object."""
    try:
        value = json_b64decode(segment.encode())
    except (ValueError, TypeError):
        raise ProofError(MALFORMED) from None
    if not isinstance(value, dict):
        raise ProofError(MALFORMED)
    return value


@dataclass(frozen=True)
class Proof:
    """A proof that passed every check: the thumbprint of its key, and a fresh nonce to hand out, if due."""

    jkt: str
    next_nonce: str | None = None


class _ProofKey(NamedTuple):
    """What a proof's protected header yields once checked: remembered by the header's exact bytes."""

    alg: JWSAlgModel
    key: Key
    jkt: str


class ProofVerifier:
    """The checks of section 4.3 on one proof; the order differs, as section 4.3 allows.

    ``window`` is how old a proof may be (its ``iat``), ``leeway`` how far in
    the future (clock skew). A proof's ``jti`` is remembered for as long as the
    proof would be accepted.
    """

    def __init__(
        self,
        *,
        algorithms: Collection[str],
        window: int,
        leeway: int,
        replays: ReplayCache,
        nonces: Nonces | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.algorithms = tuple(algorithms)
        self._allowed = frozenset(algorithms)
        self._registry = JWSRegistry(algorithms=self.algorithms)
        self._window = window
        self._leeway = leeway
        self._replay_ttl = window + leeway + 1
        self._replays = replays
        self.nonces = nonces
        self._clock = clock
        self._keys: dict[str, _ProofKey] = {}

    @classmethod
    def from_settings(cls, settings: Settings, replays: ReplayCache, nonces: Nonces | None = None) -> ProofVerifier:
        return cls(
            algorithms=settings.dpop_algorithms,
            window=settings.dpop_proof_window,
            leeway=settings.clock_leeway,
            replays=replays,
            nonces=nonces,
        )

    def verify(self, values: Sequence[str], *, method: str, url: str, access_token: str | None = None) -> Proof:
        """Check the ``DPoP`` header ``values`` against ``method`` and ``url`` (normalized, see
        :func:`normalize_htu`), and against ``access_token`` at a protected resource."""
        if not values:
            raise ProofError("A DPoP proof is required: send one in the DPoP header")
        # Check 1: "There is not more than one DPoP HTTP request header field." A proxy or
        # WSGI server joins repeated fields with commas, which a JWS never contains.
        if len(values) > 1 or "," in values[0]:
            raise ProofError("Send exactly one DPoP proof header")
        value = values[0].strip(" \t")
        if len(value) > MAX_PROOF_LENGTH:
            raise ProofError("The DPoP proof is too large")
        # Check 2: "The DPoP HTTP request header field value is a single and well-formed JWT."
        segments = value.split(".")
        if len(segments) != 3 or not all(segments) or not value.isascii():
            raise ProofError(MALFORMED)
        header_segment, payload_segment, signature_segment = segments
        alg, key, jkt = self._keys.get(header_segment) or self._proof_key(header_segment)

        # Check 6: "The JWT signature verifies with the public key contained in the jwk JOSE Header Parameter."
        try:
            signing_input = f"{header_segment}.{payload_segment}".encode()
            valid = alg.verify(signing_input, urlsafe_b64decode(signature_segment.encode()), key)
        except (JoseError, ValueError, TypeError):
            valid = False
        if not valid:
            raise ProofError("The DPoP proof signature is invalid")

        claims = _json_object(payload_segment)
        # Check 3: "All required claims per Section 4.2 are contained in the JWT."
        for name in ("jti", "htm", "htu", "iat"):
            if name not in claims:
                raise ProofError(f"The DPoP proof lacks the {name} claim")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
            raise ProofError("The DPoP proof has an invalid jti claim")
        # Check 8: "The htm claim matches the HTTP method of the current request."
        if claims["htm"] != method:
            raise ProofError("The DPoP proof's htm does not match the request method")
        # Check 9: "The htu claim matches the HTTP URI value for the HTTP request in which the JWT
        # was received, ignoring any query and fragment parts."
        htu = claims["htu"]
        if not isinstance(htu, str) or normalize_htu(htu) != url:
            raise ProofError("The DPoP proof's htu does not match the URL of this endpoint")
        # Check 11: "The creation time of the JWT ... is within an acceptable window."
        iat = claims["iat"]
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            raise ProofError("The DPoP proof has an invalid iat claim")
        now = self._clock()
        if iat > now + self._leeway:
            raise ProofError("The DPoP proof was issued in the future (iat)")
        if iat < now - self._window:
            raise ProofError("The DPoP proof is too old (iat)")
        # Check 12: "ensure that the value of the ath claim equals the hash of that access token".
        if access_token is not None:
            ath = claims.get("ath")
            if ath is None:
                raise ProofError("The DPoP proof lacks the ath claim")
            if ath != access_token_hash(access_token):
                raise ProofError("The DPoP proof's ath does not match the access token")
        # Check 10: "If the server provided a nonce value to the client, the nonce claim matches
        # the server-provided nonce value."
        next_nonce = None
        if self.nonces is not None:
            nonce = claims.get("nonce")
            if nonce is None:
                raise NonceRequired("This server requires a nonce in the DPoP proof", self.nonces.issue())
            age = self.nonces.age(nonce) if isinstance(nonce, str) else None
            if age is None:
                raise NonceRequired("The DPoP proof's nonce is invalid or expired", self.nonces.issue())
            if age > self.nonces.lifetime / 2:
                next_nonce = self.nonces.issue()
        # Section 11.1: store "the jti value of each DPoP proof for the time window in which the
        # respective DPoP proof JWT would be accepted", in the context of the target URI. Last, so
        # that only proofs that would otherwise be accepted are remembered.
        replay_key = hashlib.sha256(f"{url}\n{jkt}\n{jti}".encode(errors="surrogatepass")).digest()[:16]
        if not self._replays.first_use(replay_key, self._replay_ttl):
            raise ProofError("The DPoP proof was already used (jti)")
        return Proof(jkt, next_nonce)

    def _proof_key(self, header_segment: str) -> _ProofKey:
        """Check a proof's protected header and import its key; remembered by the header's exact bytes."""
        header = _json_object(header_segment)
        # Check 4: "The typ JOSE Header Parameter has the value dpop+jwt." (a media type: any case)
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() != "dpop+jwt":
            raise ProofError("The DPoP proof must have typ dpop+jwt")
        # Check 5: "The alg JOSE Header Parameter indicates a registered asymmetric digital
        # signature algorithm, is not none, is supported by the application, and is acceptable
        # per local policy." MCP_DPOP_ALGORITHMS holds asymmetric algorithms only.
        alg_name = header.get("alg")
        if not isinstance(alg_name, str) or alg_name not in self._allowed:
            raise ProofError("The DPoP proof is signed with an algorithm that is not allowed")
        # RFC 7515 section 4.1.11: extensions a recipient does not understand MUST be refused.
        if "crit" in header:
            raise ProofError("The DPoP proof names critical header parameters this server does not support")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict):
            raise ProofError("The DPoP proof must carry its public key in the jwk header")
        # Check 7: "The jwk JOSE Header Parameter does not contain a private key."
        if jwk.get("kty") == "oct" or not PRIVATE_MEMBERS.isdisjoint(jwk):
            raise ProofError("The DPoP proof's jwk must be a public key, without private members")
        invalid = ProofError("The DPoP proof's jwk is not a valid key for its alg")
        if jwk.get("kty") == "RSA":
            # Local policy: no RSA key under 2048 bits (checked first: joserfc warns on importing one).
            modulus = jwk.get("n")
            if not isinstance(modulus, str):
                raise invalid
            try:
                bits = int.from_bytes(urlsafe_b64decode(modulus.encode()), "big").bit_length()
            except (AttributeError, ValueError, TypeError):
                raise invalid from None
            if bits < MIN_RSA_BITS:
                raise ProofError(f"The DPoP proof's RSA key is shorter than {MIN_RSA_BITS} bits")
        try:
            alg = self._registry.get_alg(alg_name)
            key = JWKRegistry.import_key(jwk)
            alg.check_key(key)
        except (JoseError, ValueError, TypeError, KeyError):
            raise invalid from None
        proof_key = _ProofKey(alg, key, key.thumbprint())
        if len(self._keys) >= KEY_CACHE_SIZE:
            self._keys.pop(next(iter(self._keys)), None)
        self._keys[header_segment] = proof_key
        return proof_key


class ProtectedResourceDPoP:
    """Section 7 at this resource server, by MCP_DPOP: ``off``, ``allowed`` (default) or ``required``.

    The authentication hook calls :meth:`check` only for the DPoP scheme, a
    token bound by ``cnf``, or when DPoP is required; a plain Bearer request
    with an unbound token costs nothing here.
    """

    def __init__(self, mode: str = "off", verifier: ProofVerifier | None = None, *, resource_url: str = "") -> None:
        """``verifier`` and ``resource_url`` (the endpoint's public URL) are needed unless ``mode`` is off."""
        self.mode = mode
        self.required = mode == "required"
        self.schemes = (BEARER,) if mode == "off" else (BEARER, DPOP)
        self.verifier = verifier if mode != "off" else None
        self.algorithms = self.verifier.algorithms if self.verifier is not None else ()
        assert mode == "off" or (verifier is not None and normalize_htu(resource_url) is not None)
        parts = urlsplit(resource_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        path = parts.path.rstrip("/") or "/"
        htu = normalize_htu(resource_url) or ""
        # The endpoint's public URL, computed once; another protected view's URL is the configured
        # origin and the request's path.
        self._urls = {path: htu, path + "/": htu}

    @classmethod
    def from_settings(cls, settings: Settings, replays: ReplayCache, secret: str | None) -> ProtectedResourceDPoP:
        verifier = None
        if settings.dpop != "off":
            nonces = Nonces(secret or secrets.token_urlsafe(32), "resource server") if settings.dpop_nonce else None
            verifier = ProofVerifier.from_settings(settings, replays, nonces)
        return cls(settings.dpop, verifier, resource_url=settings.resource_url)

    def _url(self) -> str:
        url = self._urls.get(request.path)
        return url if url is not None else normalize_htu(self._origin + request.path) or ""

    def check(self, scheme: str, token: str, principal: Principal) -> None:
        """Refuse the request unless its credentials satisfy sections 7.1 and 7.2."""
        if scheme == BEARER:
            if principal.jkt is not None:
                # Section 7.2: such a protected resource "MUST reject a DPoP-bound access token
                # received as a bearer token".
                raise InvalidToken("The access token is DPoP-bound: send it with the DPoP scheme and a proof")
            if self.required:
                raise InvalidToken("This resource accepts only DPoP-bound access tokens")
            return
        assert self.verifier is not None
        # Section 7.1: "a resource server MUST check that a DPoP proof was also received in the DPoP
        # header field of the HTTP request, check the DPoP proof according to the rules in Section 4.3,
        # and check that the public key of the DPoP proof matches the public key to which the access
        # token is bound".
        try:
            proof = self.verifier.verify(
                request.headers.getlist("DPoP"), method=request.method, url=self._url(), access_token=token
            )
        except NonceRequired as error:
            raise UseDPoPNonce(str(error), nonce=error.nonce) from None
        except ProofError as error:
            raise InvalidDPoPProof(str(error)) from None
        if principal.jkt is None:
            raise InvalidToken("The access token is not bound to a DPoP key: send it with the Bearer scheme")
        if proof.jkt != principal.jkt:
            raise InvalidToken("The access token is bound to another DPoP key than the proof's")
        if proof.next_nonce is not None:
            g.dpop_nonce = proof.next_nonce


def init_app(app: Flask, dpop: ProtectedResourceDPoP) -> None:
    """With server nonces on, hand a fresh one to a client whose nonce is getting old (section 9)."""
    app.extensions["mcp_dpop"] = dpop
    if dpop.verifier is None or dpop.verifier.nonces is None:
        return

    @app.after_request
    def next_nonce(response: Response) -> Response:
        nonce = g.pop("dpop_nonce", None)
        if nonce is not None:
            response.headers["DPoP-Nonce"] = nonce
        return response
