"""JWT access tokens: every way a token can be wrong, each refused with its exact description."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import pytest
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey
from joserfc.jwk import Key
from joserfc.jwk import OKPKey
from joserfc.jwk import RSAKey
from joserfc.jws import JWSRegistry

from app.auth import jwt_access_token
from app.auth.challenges import InvalidToken
from app.auth.challenges import KeysUnavailable
from app.auth.jwks import KeyFetchError
from app.auth.jwks import KeyStore
from app.auth.jwks import StaticJWKS
from app.auth.jwt_access_token import JWTAccessTokenValidator
from app.auth.jwt_access_token import normalize_audience
from app.auth.principal import Principal
from tests.support.issuer import MockIssuer

NOW = 1_800_000_000
AUDIENCE = "https://mcp.example.com/mcp"
GUID = "6e74172b-be56-4843-9ff4-e66a39bb12e3"

ATTACKER = RSAKey.generate_key(2048, auto_kid=True)
ATTACKER_EC = ECKey.generate_key("P-256", auto_kid=True)
EC_P256 = ECKey.generate_key("P-256", auto_kid=True)
EC_P384 = ECKey.generate_key("P-384", auto_kid=True)
ED25519 = OKPKey.generate_key("Ed25519", auto_kid=True)

NOT_ALLOWED = "The access token is signed with an algorithm that is not allowed"
UNKNOWN_KEY = "The access token is signed with an unknown key"
BAD_SIGNATURE = "The access token signature is invalid"
MALFORMED = "The access token is malformed"
NOT_A_JWT = "The access token is not a JWT"
TOO_LARGE = "The access token is too large"
WRONG_TYPE = "The access token has the wrong type (typ)"
EXPIRED = "The access token expired"
NOT_YET_VALID = "The access token is not valid yet"
FROM_THE_FUTURE = "The access token was issued in the future"
OTHER_ISSUER = "The access token was issued by another issuer"
NOT_FOR_US = "The access token was not issued for this resource"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: object) -> str:
    return b64(json.dumps(value).encode())


def public(key: Key) -> dict[str, Any]:
    return key.as_dict(private=False)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingKeyStore(KeyStore):
    """A KeyStore that counts key lookups, to tell a cache hit from a verification."""

    finds = 0

    def find(self, kid: str | None) -> Key:
        self.finds += 1
        return super().find(kid)


class MutableSource:
    """A key source whose published keys the test changes, counting fetches."""

    def __init__(self, *keys: Key) -> None:
        self.keys = list(keys)
        self.fetches = 0

    def publish(self, *keys: Key) -> None:
        self.keys = list(keys)

    def fetch(self) -> Mapping[str, Any]:
        self.fetches += 1
        return {"keys": [public(key) for key in self.keys]}


class Forge:
    """Builds tokens from the mock issuer: well-behaved ones through its minting, odd ones by hand."""

    def __init__(self, issuer: MockIssuer) -> None:
        self.issuer = issuer

    @property
    def kid(self) -> str:
        return str(self.issuer.key.kid)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": self.issuer.issuer,
            "sub": "alice",
            "aud": AUDIENCE,
            "client_id": "test-client",
            "scope": "todo:read todo:write",
            "iat": NOW,
            "exp": NOW + 600,
            "jti": "jti-1",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(
        self, *, key: Key | None = None, header: dict[str, Any] | None = None, alg: str = "RS256", **claims: Any
    ) -> str:
        """Signed by the mock issuer (``None`` removes a claim or header member)."""
        claims = {"iat": NOW, "exp": NOW + 600, **claims}
        audience = claims.pop("aud", AUDIENCE)
        return self.issuer.mint(audience, scopes=("todo:read",), key=key, header=header, alg=alg, **claims)

    def sign(
        self,
        header: dict[str, Any] | None = None,
        *,
        payload: bytes | None = None,
        key: Key | None = None,
        **claims: Any,
    ) -> str:
        """A compact JWS signed without any header checks, for headers no library would write."""
        key = key or self.issuer.key
        full = {"alg": "RS256", "kid": key.kid, "typ": "at+jwt", **(header or {})}
        full = {k: v for k, v in full.items() if v is not None}
        body = payload if payload is not None else json.dumps(self.claims(**claims)).encode()
        signing_input = f"{segment(full)}.{b64(body)}"
        signature = JWSRegistry.algorithms[full["alg"]].sign(signing_input.encode(), key)
        return f"{signing_input}.{b64(signature)}"

    def unsigned(self, alg: str) -> str:
        return f"{segment({'alg': alg, 'kid': self.kid, 'typ': 'at+jwt'})}.{segment(self.claims())}."

    def hs256_with_public_key(self) -> str:
        """The classic algorithm confusion: HMAC keyed with the RSA public key's PEM bytes."""
        signing_input = f"{segment({'alg': 'HS256', 'kid': self.kid, 'typ': 'at+jwt'})}.{segment(self.claims())}"
        secret = self.issuer.key.as_pem(private=False)
        return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"

    def tampered(self) -> str:
        header, _, signature = self.mint().split(".")
        return f"{header}.{segment(self.claims(sub='admin'))}.{signature}"


@pytest.fixture
def forge(issuer: MockIssuer) -> Forge:
    return Forge(issuer)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def keys(issuer: MockIssuer) -> CountingKeyStore:
    published = issuer.jwks()["keys"] + [public(EC_P256), public(EC_P384), public(ED25519)]
    return CountingKeyStore(StaticJWKS({"keys": published}), clock=Clock(0))


@pytest.fixture
def make_validator(issuer: MockIssuer, keys: CountingKeyStore, clock: Clock) -> Callable[..., JWTAccessTokenValidator]:
    def make(
        profile: str = "jwt", audiences: tuple[str, ...] = (AUDIENCE,), leeway: int = 30
    ) -> JWTAccessTokenValidator:
        return JWTAccessTokenValidator(
            issuer=issuer.issuer, audiences=audiences, keys=keys, profile=profile, leeway=leeway, clock=clock
        )

    return make


@pytest.fixture
def validator(make_validator: Callable[..., JWTAccessTokenValidator]) -> JWTAccessTokenValidator:
    return make_validator()


def refusal(validator: JWTAccessTokenValidator, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        validator.validate(token)
    assert (caught.value.status_code, caught.value.error) == (401, "invalid_token")
    return caught.value.description


Build = Callable[[Forge], str]

BAD_TOKENS = [
    # The signature and its algorithm
    pytest.param(lambda f: f.unsigned("none"), NOT_ALLOWED, id="alg-none"),
    pytest.param(lambda f: f.unsigned("None"), NOT_ALLOWED, id="alg-None"),
    pytest.param(lambda f: f.hs256_with_public_key(), NOT_ALLOWED, id="hs256-keyed-with-the-rsa-public-key"),
    pytest.param(lambda f: f.sign({"alg": "PS512"}), NOT_ALLOWED, id="alg-outside-the-allow-list"),
    pytest.param(lambda f: f.mint(key=ATTACKER), UNKNOWN_KEY, id="unknown-kid"),
    pytest.param(lambda f: f.tampered(), BAD_SIGNATURE, id="tampered-payload"),
    pytest.param(lambda f: f.mint()[:-8], BAD_SIGNATURE, id="truncated-signature"),
    pytest.param(lambda f: f.mint().rpartition(".")[0] + ".", BAD_SIGNATURE, id="empty-signature"),
    pytest.param(lambda f: f.mint().rpartition(".")[0] + ".!!!", BAD_SIGNATURE, id="signature-not-base64url"),
    pytest.param(lambda f: f.sign(key=ATTACKER, header={"kid": f.kid}), BAD_SIGNATURE, id="our-kid-attacker-key"),
    # Header tricks that would have us use the attacker's key
    pytest.param(
        lambda f: f.mint(key=ATTACKER, header={"jku": f.issuer.origin + "/attacker-keys"}),
        UNKNOWN_KEY,
        id="jku-to-attacker-keys",
    ),
    pytest.param(
        lambda f: f.sign({"jku": "https://evil.example/keys", "kid": f.kid}, key=ATTACKER),
        BAD_SIGNATURE,
        id="jku-with-our-kid",
    ),
    pytest.param(
        lambda f: f.mint(key=ATTACKER, header={"x5u": "https://evil.example/cert.pem"}),
        UNKNOWN_KEY,
        id="x5u-to-attacker-certificate",
    ),
    pytest.param(
        lambda f: f.sign({"alg": "ES256", "jwk": public(ATTACKER_EC)}, key=ATTACKER_EC),
        UNKNOWN_KEY,
        id="embedded-jwk-attacker-kid",
    ),
    pytest.param(
        lambda f: f.sign({"alg": "ES256", "kid": f.kid, "jwk": public(ATTACKER_EC)}, key=ATTACKER_EC),
        MALFORMED,
        id="embedded-jwk-our-kid",
    ),
    pytest.param(
        lambda f: f.sign({"jwk": public(ATTACKER)}, key=ATTACKER),
        TOO_LARGE,
        id="embedded-rsa-jwk-overflows-the-header-limit",
    ),
    pytest.param(lambda f: f.sign({"crit": ["exp2"], "exp2": 1}), MALFORMED, id="crit-unknown-extension"),
    pytest.param(lambda f: f.sign({"crit": ["exp2"]}), MALFORMED, id="crit-names-an-absent-member"),
    # Structure
    pytest.param(lambda f: "abc.def.ghi", MALFORMED, id="garbage-segments"),
    pytest.param(lambda f: "..", MALFORMED, id="empty-segments"),
    pytest.param(lambda f: "opaque-token-value", NOT_A_JWT, id="opaque"),
    pytest.param(lambda f: f.mint().rpartition(".")[0], NOT_A_JWT, id="two-segments"),
    pytest.param(lambda f: f.mint() + ".x", NOT_A_JWT, id="four-segments"),
    pytest.param(
        lambda f: segment({"alg": "RSA-OAEP", "enc": "A256GCM"}) + ".a.b.c.d",
        "Encrypted access tokens (JWE) are not accepted",
        id="jwe-five-segments",
    ),
    pytest.param(lambda f: f.mint(padding="x" * 200_000), TOO_LARGE, id="huge-payload"),
    pytest.param(lambda f: f.sign({"x-padding": "y" * 600}), TOO_LARGE, id="huge-header"),
    pytest.param(
        lambda f: f"{segment({'kid': f.kid, 'typ': 'at+jwt'})}.{segment(f.claims())}.c2ln", MALFORMED, id="no-alg"
    ),
    pytest.param(lambda f: f"{b64(b'{not json')}.{segment(f.claims())}.c2ln", MALFORMED, id="header-not-json"),
    pytest.param(lambda f: f.sign(payload=b"not json"), MALFORMED, id="payload-not-json"),
    pytest.param(lambda f: f.sign(payload=b"[1, 2]"), MALFORMED, id="payload-json-array"),
    pytest.param(lambda f: f.sign({"kid": 5}), MALFORMED, id="kid-not-a-string"),
    # typ
    pytest.param(lambda f: f.mint(header={"typ": "dpop+jwt"}), WRONG_TYPE, id="typ-dpop"),
    pytest.param(lambda f: f.mint(header={"typ": "JOSE"}), WRONG_TYPE, id="typ-jose"),
    pytest.param(lambda f: f.sign({"typ": ""}), WRONG_TYPE, id="typ-empty"),
    pytest.param(lambda f: f.sign({"typ": 5}), MALFORMED, id="typ-not-a-string"),
    # Time
    pytest.param(lambda f: f.mint(exp=NOW - 31), EXPIRED, id="expired"),
    pytest.param(lambda f: f.mint(nbf=NOW + 31), NOT_YET_VALID, id="nbf-beyond-leeway"),
    pytest.param(lambda f: f.mint(iat=NOW + 3600), FROM_THE_FUTURE, id="iat-far-in-the-future"),
    pytest.param(lambda f: f.mint(exp=None), "The access token lacks the exp claim", id="exp-missing"),
    pytest.param(lambda f: f.mint(exp=str(NOW + 600)), "The access token has an invalid exp claim", id="exp-string"),
    pytest.param(lambda f: f.mint(exp=True), "The access token has an invalid exp claim", id="exp-boolean"),
    pytest.param(lambda f: f.mint(nbf="soon"), "The access token has an invalid nbf claim", id="nbf-string"),
    pytest.param(lambda f: f.mint(iat="yesterday"), "The access token has an invalid iat claim", id="iat-string"),
    pytest.param(lambda f: f.mint(iss=42), "The access token has an invalid iss claim", id="iss-number"),
    # Issuer and subject
    pytest.param(lambda f: f.mint(iss="https://evil.example"), OTHER_ISSUER, id="wrong-iss"),
    pytest.param(lambda f: f.mint(iss=f.issuer.issuer + "/"), OTHER_ISSUER, id="iss-trailing-slash"),
    pytest.param(lambda f: f.mint(iss=None), "The access token lacks the iss claim", id="iss-missing"),
    pytest.param(lambda f: f.mint(sub=None), "The access token lacks the sub claim", id="sub-missing"),
    pytest.param(lambda f: f.mint(sub=""), "The access token has an invalid sub claim", id="sub-empty"),
    pytest.param(lambda f: f.mint(sub=42), "The access token has an invalid sub claim", id="sub-number"),
    pytest.param(lambda f: f.mint(jti=42), "The access token has an invalid jti claim", id="jti-number"),
    # Audience
    pytest.param(lambda f: f.mint(aud="https://other.example.com/mcp"), NOT_FOR_US, id="wrong-aud"),
    pytest.param(
        lambda f: f.mint(aud=["https://a.example.com", "https://b.example.com"]), NOT_FOR_US, id="aud-list-not-ours"
    ),
    pytest.param(lambda f: f.mint(aud=None), NOT_FOR_US, id="aud-missing"),
    pytest.param(lambda f: f.mint(aud=[]), NOT_FOR_US, id="aud-empty-list"),
    pytest.param(lambda f: f.mint(aud=[1, 2]), "The access token has an invalid aud claim", id="aud-numbers"),
    pytest.param(lambda f: f.mint(aud=f.issuer.issuer), NOT_FOR_US, id="aud-is-the-issuer"),
]


class TestRefused:
    @pytest.mark.parametrize(("build", "description"), BAD_TOKENS)
    def test_bad_token(self, validator: JWTAccessTokenValidator, forge: Forge, build: Build, description: str) -> None:
        assert refusal(validator, build(forge)) == description

    @pytest.mark.parametrize(("build", "description"), BAD_TOKENS)
    def test_bad_token_under_rfc9068(
        self, make_validator: Callable[..., JWTAccessTokenValidator], forge: Forge, build: Build, description: str
    ) -> None:
        assert refusal(make_validator("rfc9068"), build(forge)) == description

    def test_jku_is_never_fetched(self, validator: JWTAccessTokenValidator, forge: Forge, issuer: MockIssuer) -> None:
        token = forge.mint(key=ATTACKER, header={"jku": issuer.origin + "/attacker-keys"})
        assert refusal(validator, token) == UNKNOWN_KEY
        assert "/attacker-keys" not in issuer.requests

    def test_refused_tokens_are_not_cached(
        self, validator: JWTAccessTokenValidator, forge: Forge, keys: CountingKeyStore
    ) -> None:
        token = forge.mint(aud="https://other.example.com/mcp")
        assert refusal(validator, token) == NOT_FOR_US
        assert refusal(validator, token) == NOT_FOR_US
        assert keys.finds == 2

    def test_random_kids_cause_one_fetch_per_cooldown(self, issuer: MockIssuer, forge: Forge) -> None:
        key_clock = Clock(0)
        keys = KeyStore(StaticJWKS(issuer.jwks()), refetch_cooldown=30, clock=key_clock)
        validator = JWTAccessTokenValidator(issuer=issuer.issuer, audiences=[AUDIENCE], keys=keys, clock=Clock(NOW))
        keys.ensure_loaded()
        key_clock.now = 60
        body = segment(forge.claims())
        for _ in range(1000):
            token = f"{segment({'alg': 'RS256', 'kid': uuid.uuid4().hex, 'typ': 'at+jwt'})}.{body}.c2ln"
            assert refusal(validator, token) == UNKNOWN_KEY
        assert keys.fetch_count == 2

    def test_no_signing_keys_at_all(self, issuer: MockIssuer, forge: Forge) -> None:
        class DownSource:
            def fetch(self) -> Mapping[str, Any]:
                raise KeyFetchError("down")

        keys = KeyStore(DownSource(), refetch_cooldown=30, clock=Clock(0))
        validator = JWTAccessTokenValidator(issuer=issuer.issuer, audiences=[AUDIENCE], keys=keys, clock=Clock(NOW))
        with pytest.raises(KeysUnavailable) as caught:
            validator.validate(forge.mint())
        assert caught.value.retry_after == 30


class TestProfiles:
    PROFILE_DEPENDENT = [
        pytest.param(lambda f: f.mint(header={"typ": "JWT"}), WRONG_TYPE, id="typ-JWT"),
        pytest.param(lambda f: f.mint(header={"typ": "jwt"}), WRONG_TYPE, id="typ-jwt-lower-case"),
        pytest.param(lambda f: f.sign({"typ": None}), WRONG_TYPE, id="typ-absent"),
        pytest.param(lambda f: f.mint(client_id=None), "The access token lacks the client_id claim", id="no-client-id"),
        pytest.param(lambda f: f.mint(jti=None), "The access token lacks the jti claim", id="no-jti"),
        pytest.param(lambda f: f.mint(iat=None), "The access token lacks the iat claim", id="no-iat"),
        pytest.param(
            lambda f: f.mint(client_id=7), "The access token has an invalid client_id claim", id="client-id-number"
        ),
        pytest.param(
            lambda f: f.mint(client_id=""), "The access token has an invalid client_id claim", id="client-id-empty"
        ),
    ]

    @pytest.mark.parametrize(("build", "description"), PROFILE_DEPENDENT)
    def test_accepted_under_the_jwt_profile(
        self, validator: JWTAccessTokenValidator, forge: Forge, build: Build, description: str
    ) -> None:
        assert validator.validate(build(forge)).sub == "alice"

    @pytest.mark.parametrize(("build", "description"), PROFILE_DEPENDENT)
    def test_refused_under_the_rfc9068_profile(
        self, make_validator: Callable[..., JWTAccessTokenValidator], forge: Forge, build: Build, description: str
    ) -> None:
        assert refusal(make_validator("rfc9068"), build(forge)) == description

    @pytest.mark.parametrize(
        "typ",
        [
            pytest.param("at+jwt", id="at+jwt"),
            pytest.param("AT+JWT", id="upper-case"),
            pytest.param("application/at+jwt", id="media-type"),
            pytest.param("Application/AT+JWT", id="media-type-mixed-case"),
        ],
    )
    def test_access_token_types_pass_both_profiles(
        self, make_validator: Callable[..., JWTAccessTokenValidator], forge: Forge, typ: str
    ) -> None:
        token = forge.mint(header={"typ": typ})
        assert make_validator("jwt").validate(token).sub == "alice"
        assert make_validator("rfc9068").validate(token).sub == "alice"

    def test_without_client_id_the_jwt_profile_falls_back_to_azp(
        self, validator: JWTAccessTokenValidator, forge: Forge
    ) -> None:
        assert validator.validate(forge.mint(client_id=None, azp="spa-client")).client_id == "spa-client"

    def test_extra_header_members_are_allowed(self, validator: JWTAccessTokenValidator, forge: Forge) -> None:
        assert validator.validate(forge.sign({"nonce": "entra-nonce", "x5t": "abc"})).sub == "alice"


class TestAccepted:
    def test_principal(self, validator: JWTAccessTokenValidator, forge: Forge, issuer: MockIssuer) -> None:
        claims = forge.claims(org_id="org-7")
        principal = validator.validate(forge.sign(**claims))
        assert principal == Principal(
            sub="alice",
            issuer=issuer.issuer,
            client_id="test-client",
            scopes=("todo:read", "todo:write"),
            org_id="org-7",
            expires_at=NOW + 600,
            claims=claims,
        )

    @pytest.mark.parametrize(
        ("alg", "key"),
        [
            pytest.param("RS256", None, id="RS256"),
            pytest.param("RS384", None, id="RS384"),
            pytest.param("RS512", None, id="RS512"),
            pytest.param("PS256", None, id="PS256"),
            pytest.param("ES256", EC_P256, id="ES256"),
            pytest.param("ES384", EC_P384, id="ES384"),
        ],
    )
    def test_algorithms(self, validator: JWTAccessTokenValidator, forge: Forge, alg: str, key: Key | None) -> None:
        assert validator.validate(forge.mint(key=key, alg=alg)).sub == "alice"

    def test_eddsa_is_accepted_with_joserfcs_deprecation_warning(
        self, validator: JWTAccessTokenValidator, forge: Forge
    ) -> None:
        with pytest.warns(SecurityWarning, match=r"^EdDSA is deprecated via RFC 9864$"):
            token = forge.mint(key=ED25519, alg="EdDSA")
        with pytest.warns(SecurityWarning, match=r"^EdDSA is deprecated via RFC 9864$"):
            assert validator.validate(token).sub == "alice"

    def test_ed25519_under_its_rfc_9864_name(self, validator: JWTAccessTokenValidator, forge: Forge) -> None:
        assert validator.validate(forge.mint(key=ED25519, alg="Ed25519")).sub == "alice"

    def test_several_missing_claims_are_named_together(
        self, make_validator: Callable[..., JWTAccessTokenValidator], forge: Forge
    ) -> None:
        token = forge.mint(iat=None, jti=None)
        assert refusal(make_validator("rfc9068"), token) == "The access token lacks the claims iat, jti"

    def test_token_without_kid_when_the_issuer_has_one_key(self, issuer: MockIssuer, forge: Forge) -> None:
        keys = KeyStore(StaticJWKS({"keys": [public(issuer.key)]}), clock=Clock(0))
        validator = JWTAccessTokenValidator(issuer=issuer.issuer, audiences=[AUDIENCE], keys=keys, clock=Clock(NOW))
        assert validator.validate(forge.sign({"kid": None})).sub == "alice"

    def test_token_without_kid_when_the_issuer_has_two_keys(
        self, validator: JWTAccessTokenValidator, forge: Forge
    ) -> None:
        assert refusal(validator, forge.sign({"kid": None})) == UNKNOWN_KEY


class TestAudience:
    @pytest.mark.parametrize(
        "aud",
        [
            pytest.param(AUDIENCE, id="string"),
            pytest.param([AUDIENCE], id="list"),
            pytest.param(["https://api.example.com", AUDIENCE], id="list-with-others"),
            pytest.param("HTTPS://MCP.EXAMPLE.COM/mcp", id="upper-case-scheme-and-host"),
            pytest.param("https://mcp.example.com/mcp/", id="trailing-slash"),
            pytest.param("Https://Mcp.Example.Com/mcp/", id="mixed-case-and-slash"),
            pytest.param(["https://api.example.com", "HTTPS://mcp.example.com/mcp/"], id="normalised-in-a-list"),
        ],
    )
    def test_accepted(self, validator: JWTAccessTokenValidator, forge: Forge, aud: str | list[str]) -> None:
        assert validator.validate(forge.mint(aud=aud)).sub == "alice"

    @pytest.mark.parametrize(
        "aud",
        [
            pytest.param("https://mcp.example.com/MCP", id="path-upper-case"),
            pytest.param("https://mcp.example.com/Mcp/", id="path-mixed-case-and-slash"),
            pytest.param("https://mcp.example.com/mcp//", id="two-trailing-slashes"),
            pytest.param("https://mcp.example.com/mcp/tools", id="longer-path"),
            pytest.param("https://mcp.example.com", id="origin-only"),
            pytest.param("http://mcp.example.com/mcp", id="other-scheme"),
            pytest.param("https://mcp.example.com:8443/mcp", id="other-port"),
            pytest.param("mcp.example.com/mcp", id="no-scheme"),
        ],
    )
    def test_refused(self, validator: JWTAccessTokenValidator, forge: Forge, aud: str) -> None:
        assert refusal(validator, forge.mint(aud=aud)) == NOT_FOR_US

    def test_configured_audience_is_normalised_too(
        self, make_validator: Callable[..., JWTAccessTokenValidator], forge: Forge
    ) -> None:
        validator = make_validator(audiences=("HTTPS://MCP.Example.com/mcp/",))
        assert validator.validate(forge.mint(aud=AUDIENCE)).sub == "alice"

    def test_opaque_audience(self, make_validator: Callable[..., JWTAccessTokenValidator], forge: Forge) -> None:
        validator = make_validator(audiences=(AUDIENCE, GUID))
        assert validator.validate(forge.mint(aud=GUID)).sub == "alice"
        assert validator.validate(forge.mint(aud=[GUID])).sub == "alice"
        assert refusal(validator, forge.mint(aud=str(uuid.UUID(int=1)))) == NOT_FOR_US
        assert refusal(validator, forge.mint(aud=GUID.upper())) == NOT_FOR_US

    @pytest.mark.parametrize(
        ("value", "normalised"),
        [
            pytest.param("https://mcp.example.com/mcp", "https://mcp.example.com/mcp", id="canonical"),
            pytest.param("HTTPS://MCP.EXAMPLE.COM/MCP", "https://mcp.example.com/MCP", id="path-case-kept"),
            pytest.param("https://mcp.example.com/mcp/", "https://mcp.example.com/mcp", id="one-slash-dropped"),
            pytest.param("https://mcp.example.com/mcp//", "https://mcp.example.com/mcp/", id="only-one-slash-dropped"),
            pytest.param("HTTP://LOCALHOST:5000/", "http://localhost:5000", id="origin"),
            pytest.param("https://h.example.com/p?q=A", "https://h.example.com/p?q=A", id="query-kept"),
            pytest.param("api://MCP-App/", "api://MCP-App", id="opaque-uri-only-slash"),
            pytest.param(GUID.upper(), GUID.upper(), id="guid-untouched"),
            pytest.param("", "", id="empty"),
        ],
    )
    def test_normalize_audience(self, value: str, normalised: str) -> None:
        assert normalize_audience(value) == normalised


class TestClock:
    @pytest.mark.parametrize(
        ("leeway", "claims", "description"),
        [
            pytest.param(30, {"exp": NOW - 29}, None, id="exp-within-leeway"),
            pytest.param(30, {"exp": NOW - 30}, EXPIRED, id="exp-at-leeway"),
            pytest.param(30, {"nbf": NOW + 30}, None, id="nbf-at-leeway"),
            pytest.param(30, {"nbf": NOW + 31}, NOT_YET_VALID, id="nbf-beyond-leeway"),
            pytest.param(30, {"iat": NOW + 30}, None, id="iat-at-leeway"),
            pytest.param(30, {"iat": NOW + 31}, FROM_THE_FUTURE, id="iat-beyond-leeway"),
            pytest.param(0, {"exp": NOW + 1}, None, id="no-leeway-exp-next-second"),
            pytest.param(0, {"exp": NOW}, EXPIRED, id="no-leeway-exp-now"),
            pytest.param(0, {"nbf": NOW}, None, id="no-leeway-nbf-now"),
            pytest.param(0, {"nbf": NOW + 1}, NOT_YET_VALID, id="no-leeway-nbf-next-second"),
            pytest.param(300, {"exp": NOW - 299}, None, id="largest-leeway"),
        ],
    )
    def test_leeway_edges(
        self,
        make_validator: Callable[..., JWTAccessTokenValidator],
        forge: Forge,
        leeway: int,
        claims: dict[str, int],
        description: str | None,
    ) -> None:
        validator = make_validator(leeway=leeway)
        token = forge.mint(**claims)
        if description is None:
            assert validator.validate(token).sub == "alice"
        else:
            assert refusal(validator, token) == description

    def test_the_injected_clock_is_read_on_every_validation(
        self, make_validator: Callable[..., JWTAccessTokenValidator], forge: Forge, clock: Clock
    ) -> None:
        token = forge.mint(nbf=NOW + 100)
        assert refusal(make_validator(), token) == NOT_YET_VALID
        clock.now = NOW + 70
        assert make_validator().validate(token).sub == "alice"
        clock.now = NOW + 630
        assert refusal(make_validator(), token) == EXPIRED


class TestVerifiedTokenCache:
    def test_second_validation_does_not_touch_the_key_store(
        self, validator: JWTAccessTokenValidator, forge: Forge, keys: CountingKeyStore
    ) -> None:
        token = forge.mint()
        first = validator.validate(token)
        assert validator.validate(token) is first
        assert keys.finds == 1

    def test_each_token_is_verified_once(
        self, validator: JWTAccessTokenValidator, forge: Forge, keys: CountingKeyStore
    ) -> None:
        one, two = forge.mint(jti="a"), forge.mint(jti="b")
        for token in (one, two, one, two):
            validator.validate(token)
        assert keys.finds == 2

    def test_expired_cached_token_is_refused(
        self, validator: JWTAccessTokenValidator, forge: Forge, keys: CountingKeyStore, clock: Clock
    ) -> None:
        token = forge.mint(exp=NOW + 600)
        principal = validator.validate(token)
        clock.now = NOW + 629
        assert validator.validate(token) is principal
        assert keys.finds == 1
        clock.now = NOW + 630
        assert refusal(validator, token) == EXPIRED
        assert keys.finds == 1
        assert refusal(validator, token) == EXPIRED
        assert keys.finds == 2

    def test_oldest_entry_is_dropped_when_full(
        self,
        validator: JWTAccessTokenValidator,
        forge: Forge,
        keys: CountingKeyStore,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(jwt_access_token, "CACHE_SIZE", 2)
        first, second, third = (forge.mint(jti=str(n)) for n in range(3))
        for token in (first, second, third):
            validator.validate(token)
        assert keys.finds == 3
        validator.validate(third)
        validator.validate(second)
        assert keys.finds == 3
        validator.validate(first)
        assert keys.finds == 4

    def test_a_cached_verdict_dies_with_its_key(self, issuer: MockIssuer, forge: Forge, clock: Clock) -> None:
        """The issuer withdraws a key (rotated out, or compromised): the tokens it signed are refused as soon as
        this server has the new key set, even those it had verified and remembered."""
        withdrawn = RSAKey.generate_key(2048, auto_kid=True)
        source = MutableSource(withdrawn, EC_P256)
        keys_clock = Clock(0)
        keys = KeyStore(source, ttl=3600, refetch_cooldown=30, clock=keys_clock)
        validator = JWTAccessTokenValidator(issuer=issuer.issuer, audiences=(AUDIENCE,), keys=keys, clock=clock)
        signed = forge.mint(key=withdrawn)
        kept = forge.mint(key=EC_P256, alg="ES256", jti="kept")
        assert validator.validate(signed).sub == "alice"
        assert validator.validate(kept).sub == "alice"
        source.publish(EC_P256)  # the issuer's set without the withdrawn key
        assert validator.validate(signed).sub == "alice"  # this server has not refreshed its keys yet
        keys_clock.now = 3600  # the TTL: the next request refreshes them, even one whose verdict is cached
        assert refusal(validator, signed) == UNKNOWN_KEY
        assert refusal(validator, signed) == UNKNOWN_KEY
        assert validator.validate(kept).sub == "alice"  # a key that stayed keeps its tokens' verdicts
        assert source.fetches == 2

    def test_a_refetch_for_another_tokens_kid_also_retires_verdicts(
        self, issuer: MockIssuer, forge: Forge, clock: Clock
    ) -> None:
        withdrawn = RSAKey.generate_key(2048, auto_kid=True)
        source = MutableSource(withdrawn)
        keys_clock = Clock(0)
        keys = KeyStore(source, ttl=3600, refetch_cooldown=30, clock=keys_clock)
        validator = JWTAccessTokenValidator(issuer=issuer.issuer, audiences=(AUDIENCE,), keys=keys, clock=clock)
        signed = forge.mint(key=withdrawn)
        validator.validate(signed)
        source.publish(EC_P256)  # rotated: the old key is gone, a new one signs
        keys_clock.now = 31  # past the refetch cooldown, within the TTL
        assert validator.validate(forge.mint(key=EC_P256, alg="ES256", jti="new")).sub == "alice"
        assert refusal(validator, signed) == UNKNOWN_KEY
        assert keys.generation == 2

    def test_a_refresh_with_the_same_keys_keeps_every_verdict(
        self, validator: JWTAccessTokenValidator, forge: Forge, keys: CountingKeyStore
    ) -> None:
        token = forge.mint()
        validator.validate(token)
        generation = keys.generation
        keys._clock.advance(3600)  # type: ignore[attr-defined]
        assert validator.validate(token).sub == "alice"  # its TTL ran out: refetched, the same set
        assert keys.fetch_count == 2
        assert keys.generation == generation
        assert keys.finds == 1

    def test_cache_is_per_validator(
        self, make_validator: Callable[..., JWTAccessTokenValidator], forge: Forge, keys: CountingKeyStore
    ) -> None:
        token = forge.mint()
        make_validator().validate(token)
        assert refusal(make_validator(audiences=("https://other.example.com/mcp",)), token) == NOT_FOR_US
        assert keys.finds == 2
