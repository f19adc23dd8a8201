"""A battery of bad tokens: what attackers and misconfigured providers send, each with the refusal it earns."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from joserfc.jwk import RSAKey

from tests.support.issuer import MockIssuer

ATTACKER = RSAKey.generate_key(2048, auto_kid=True)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: object) -> str:
    return b64(json.dumps(value).encode())


@dataclass(frozen=True)
class BadToken:
    name: str
    build: Callable[[MockIssuer, str], str]
    status: int
    error: str
    description: str


def _rs256_raw(issuer: MockIssuer, header: dict[str, object], payload: bytes) -> str:
    """Signed with the issuer's real key, whatever the header says: joserfc itself refuses to build these."""
    signing_input = f"{segment(header)}.{b64(payload)}".encode()
    signature = issuer.key.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr]
    return f"{signing_input.decode()}.{b64(signature)}"


def _claims(issuer: MockIssuer, audience: str) -> bytes:
    return json.dumps(issuer.claims(audience)).encode()


def _hs256_with_public_key(issuer: MockIssuer, audience: str) -> str:
    """The classic algorithm confusion: HMAC keyed with the RSA public key the server already trusts."""
    header = {"alg": "HS256", "kid": issuer.key.kid, "typ": "at+jwt"}
    signing_input = f"{segment(header)}.{segment(issuer.claims(audience))}".encode()
    secret = issuer.key.as_pem(private=False)
    return f"{signing_input.decode()}.{b64(hmac.new(secret, signing_input, hashlib.sha256).digest())}"


def _tampered(issuer: MockIssuer, audience: str) -> str:
    header, _, signature = issuer.mint(audience).split(".")
    return f"{header}.{segment(issuer.claims(audience, sub='admin'))}.{signature}"


def _unsigned(issuer: MockIssuer, audience: str) -> str:
    return f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(issuer.claims(audience))}."


INVALID = "invalid_token"
BAD_REQUEST = "invalid_request"
UNKNOWN_KEY = "The access token is signed with an unknown key"
MALFORMED = "The access token is malformed"
NOT_FOR_US = "The access token was not issued for this resource"
NOT_ALLOWED_ALG = "The access token is signed with an algorithm that is not allowed"


def _t(name: str, build: Callable[[MockIssuer, str], str], description: str, status: int = 401) -> BadToken:
    return BadToken(name, build, status, INVALID if status == 401 else BAD_REQUEST, description)


now = int(time.time())

BAD_TOKENS: list[BadToken] = [
    _t("alg none", _unsigned, NOT_ALLOWED_ALG),
    _t("alg none with a signature", lambda i, a: _unsigned(i, a) + "c2ln", NOT_ALLOWED_ALG),
    _t("HS256 signed with the RSA public key", _hs256_with_public_key, NOT_ALLOWED_ALG),
    _t("unknown kid", lambda i, a: i.mint(a, key=ATTACKER), UNKNOWN_KEY),
    _t(
        "attacker key under our kid",
        lambda i, a: i.mint(a, key=ATTACKER, header={"kid": i.key.kid}),
        "The access token signature is invalid",
    ),
    _t(
        "jku pointing at the attacker",
        lambda i, a: i.mint(a, key=ATTACKER, header={"jku": "https://evil.example/k"}),
        UNKNOWN_KEY,
    ),
    _t(
        "x5u pointing at the attacker",
        lambda i, a: i.mint(a, key=ATTACKER, header={"x5u": "https://evil.example/c"}),
        UNKNOWN_KEY,
    ),
    _t(
        "embedded jwk",
        lambda i, a: i.mint(a, key=ATTACKER, header={"kid": None, "jwk": {"kty": "oct", "k": "AA"}}),
        "The access token signature is invalid",
    ),
    _t(
        "crit with an unknown extension",
        lambda i, a: _rs256_raw(i, {"alg": "RS256", "kid": i.key.kid, "crit": ["exp2"], "exp2": 1}, _claims(i, a)),
        MALFORMED,
    ),
    _t("expired", lambda i, a: i.mint(a, exp=now - 3600), "The access token expired"),
    _t("expired beyond the leeway", lambda i, a: i.mint(a, exp=now - 31), "The access token expired"),
    _t("not yet valid", lambda i, a: i.mint(a, nbf=now + 3600), "The access token is not valid yet"),
    _t(
        "issued far in the future", lambda i, a: i.mint(a, iat=now + 86400), "The access token was issued in the future"
    ),
    _t("no exp", lambda i, a: i.mint(a, exp=None), "The access token lacks the exp claim"),
    _t("exp as a string", lambda i, a: i.mint(a, exp=str(now + 600)), "The access token has an invalid exp claim"),
    _t(
        "wrong issuer",
        lambda i, a: i.mint(a, iss="https://evil.example"),
        "The access token was issued by another issuer",
    ),
    _t(
        "issuer with a trailing slash",
        lambda i, a: i.mint(a, iss=i.issuer + "/"),
        "The access token was issued by another issuer",
    ),
    _t("no issuer", lambda i, a: i.mint(a, iss=None), "The access token lacks the iss claim"),
    _t("wrong audience", lambda i, a: i.mint("https://other.example/mcp"), NOT_FOR_US),
    _t("audience list without ours", lambda i, a: i.mint(["https://a.example", "https://b.example"]), NOT_FOR_US),
    _t("no audience", lambda i, a: i.mint(a, aud=None), NOT_FOR_US),
    _t("another resource of the same issuer", lambda i, a: i.mint(a.rsplit("/", 1)[0] + "/other"), NOT_FOR_US),
    _t("audience with another path case", lambda i, a: i.mint(a.upper().replace("HTTP://", "http://")), NOT_FOR_US),
    _t("the issuer as audience", lambda i, a: i.mint(i.issuer), NOT_FOR_US),
    _t("no sub", lambda i, a: i.mint(a, sub=None), "The access token lacks the sub claim"),
    _t("sub not a string", lambda i, a: i.mint(a, sub=42), "The access token has an invalid sub claim"),
    _t("tampered payload", _tampered, "The access token signature is invalid"),
    _t("truncated signature", lambda i, a: i.mint(a)[:-10], "The access token signature is invalid"),
    _t("signature removed", lambda i, a: i.mint(a).rsplit(".", 1)[0] + ".", "The access token signature is invalid"),
    _t("garbage segments", lambda i, a: "abc.def.ghi", MALFORMED),
    _t("empty segments", lambda i, a: "..", MALFORMED),
    _t("two segments", lambda i, a: i.mint(a).rsplit(".", 1)[0], "The access token is not a JWT"),
    _t("four segments", lambda i, a: i.mint(a) + ".extra", "The access token is not a JWT"),
    _t("opaque random string", lambda i, a: "3f9d2a0b8c7e4f61a5d2", "The access token is not a JWT"),
    _t(
        "a JWE",
        lambda i, a: f"{segment({'alg': 'RSA-OAEP', 'enc': 'A256GCM'})}.a.b.c.d",
        "Encrypted access tokens (JWE) are not accepted",
    ),
    _t("100 KB token", lambda i, a: i.mint(a, padding="x" * 100_000), "The access token is too large"),
    _t("header not JSON", lambda i, a: f"{b64(b'{nope')}.{segment(i.claims(a))}.c2ln", MALFORMED),
    _t("payload not JSON", lambda i, a: _rs256_raw(i, {"alg": "RS256", "kid": i.key.kid}, b"nope"), MALFORMED),
    _t("payload a JSON list", lambda i, a: _rs256_raw(i, {"alg": "RS256", "kid": i.key.kid}, b"[1]"), MALFORMED),
    _t("typ dpop+jwt", lambda i, a: i.mint(a, header={"typ": "dpop+jwt"}), "The access token has the wrong type (typ)"),
    _t(
        "typ of an ID token logout",
        lambda i, a: i.mint(a, header={"typ": "logout+jwt"}),
        "The access token has the wrong type (typ)",
    ),
    _t(
        "kid not a string",
        lambda i, a: _rs256_raw(i, {"alg": "RS256", "kid": 7}, _claims(i, a)),
        MALFORMED,
    ),
    _t(
        "a second issuer's key naming the first",
        lambda i, a: i.mint(a, key=ATTACKER, header={"kid": "second-issuer"}),
        UNKNOWN_KEY,
    ),
    _t(
        "space inside the token",
        lambda i, a: "abc def",
        "The Authorization header must carry exactly one bearer token",
        status=400,
    ),
    _t(
        "comma-separated tokens",
        lambda i, a: f"{i.mint(a)},{i.mint(a)}",
        "The Authorization header must carry exactly one bearer token",
        status=400,
    ),
]
