"""RFC 9449 DPoP at the resource server: every proof defect refused with its exact challenge, in-process.

The proofs are real (tests/support/dpop.py signs them with joserfc), the tokens
come from the mock issuer with ``cnf.jkt`` bound to the proof key, and every
refusal is checked for status, both challenges and body.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient
from joserfc.errors import SecurityWarning
from joserfc.jwk import OctKey

from app import create_app
from app import stop_worker
from app.auth.challenges import InvalidToken
from app.auth.dpop import MALFORMED
from app.auth.dpop import MemoryReplayCache
from app.auth.dpop import Nonces
from app.auth.dpop import ProofError
from app.auth.dpop import ProofVerifier
from app.auth.dpop import access_token_hash
from app.auth.dpop import confirmed_key
from app.auth.dpop import normalize_htu
from app.settings import Settings
from tests.conftest import RESOURCE
from tests.conftest import Tokens
from tests.support.dpop import DEFAULT_ALGS
from tests.support.dpop import DPoPKey
from tests.support.dpop import b64
from tests.support.dpop import compact
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers

METADATA = "http://localhost/.well-known/oauth-protected-resource/mcp"
TAIL = f'scope="todo:read todo:write", resource_metadata="{METADATA}"'
LIST = json.dumps(request_body("tools/list"))
KEY = DPoPKey.generate("EC")
OTHER_KEY = DPoPKey.generate("EC")


def settings_for(issuer: MockIssuer, tmp_path: Path, **env: str) -> Settings:
    return Settings.from_mapping(
        {
            "MCP_RESOURCE_URL": RESOURCE,
            "MCP_ISSUER": issuer.issuer,
            "MCP_SCOPES_SUPPORTED": "todo:read todo:write",
            "MCP_INSTANCE_PATH": str(tmp_path / "instance"),
            "MCP_RATE_LIMIT": "off",
            **env,
        }
    )


@pytest.fixture
def make_app(issuer: MockIssuer, tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def make(**env: str) -> Flask:
        apps.append(create_app(settings_for(issuer, tmp_path, **env)))
        return apps[-1]

    yield make
    for app in apps:
        stop_worker(app)


@pytest.fixture
def client(make_app: Callable[..., Flask]) -> FlaskClient:
    return make_app().test_client()


def bound(tokens: Tokens, key: DPoPKey = KEY, **claims: Any) -> str:
    return tokens.mint(cnf={"jkt": key.jkt}, **claims)


def dpop_headers(
    token: str, proof: str | list[str] | None, method: str = "tools/list", name: str | None = None
) -> list[tuple[str, str]]:
    """The MCP request headers with ``Authorization: DPoP``; one DPoP field per proof given."""
    headers = list(request_headers(method, name).items())
    headers.append(("Authorization", f"DPoP {token}"))
    for value in [proof] if isinstance(proof, str) else proof or []:
        headers.append(("DPoP", value))
    return headers


def post(client: FlaskClient, headers: list[tuple[str, str]] | dict[str, str]):  # type: ignore[no-untyped-def]
    response = client.post("/mcp", headers=headers, data=LIST)
    response.close()
    return response


def assert_refused(response: Any, status: int, error: str, description: str) -> None:
    """The exact answer: status, the Bearer and the DPoP challenge, and the JSON body."""
    assert response.status_code == status, response.get_data(as_text=True)
    params = f'error="{error}", error_description="{description}", '
    bearer = f"Bearer {TAIL}" if error in ("invalid_dpop_proof", "use_dpop_nonce") else f"Bearer {params}{TAIL}"
    assert response.headers.getlist("WWW-Authenticate") == [bearer, f"DPoP {params}{DEFAULT_ALGS}, {TAIL}"]
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_json() == {"error": error, "error_description": description}


def tools_listed(response: Any) -> bool:
    return response.status_code == 200 and b'"whoami"' in response.get_data()


def forged_header_proof(header: dict[str, Any], claims: dict[str, Any] | None = None) -> Callable[[str], str]:
    """A proof with this exact protected header, signed with KEY."""

    def build(token: str) -> str:
        body = {"jti": f"j-{time.time_ns()}", "htm": "POST", "htu": RESOURCE, "iat": int(time.time())}
        body["ath"] = access_token_hash(token)
        return compact(header, {**body, **(claims or {})}, KEY.key, KEY.alg)

    return build


def small_rsa_proof(token: str) -> str:
    """Signed with cryptography itself: joserfc will not even import a 1024-bit key without a warning."""
    small = rsa.generate_private_key(65537, 1024)  # noqa: S505 (the weak key under test)
    numbers = small.public_key().public_numbers()
    jwk = {"kty": "RSA", "n": b64(numbers.n.to_bytes(128, "big")), "e": b64(numbers.e.to_bytes(3, "big"))}
    header = b64(json.dumps({"typ": "dpop+jwt", "alg": "RS256", "jwk": jwk}).encode())
    claims = {"jti": "small", "htm": "POST", "htu": RESOURCE, "iat": int(time.time()), "ath": access_token_hash(token)}
    signing_input = f"{header}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(small.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()))}"


def hs256_proof(token: str) -> str:
    secret = OctKey.generate_key(256)
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": secret.as_dict(private=True)}
    claims = {"jti": "hs", "htm": "POST", "htu": RESOURCE, "iat": int(time.time()), "ath": access_token_hash(token)}
    return compact(header, claims, secret, "HS256")


def none_proof(token: str) -> str:
    header = b64(json.dumps({"typ": "dpop+jwt", "alg": "none", "jwk": KEY.public_jwk}).encode())
    claims = b64(json.dumps({"jti": "n", "htm": "POST", "htu": RESOURCE, "iat": int(time.time())}).encode())
    return f"{header}.{claims}.AAAA"


def tampered_proof(token: str) -> str:
    header, _, signature = KEY.proof("POST", RESOURCE, access_token=token).split(".")
    other = b64(json.dumps({"jti": "t", "htm": "POST", "htu": RESOURCE, "iat": int(time.time())}).encode())
    return f"{header}.{other}.{signature}"


def proof(**overrides: Any) -> Callable[[str], str]:
    """A proof by KEY for POST /mcp and the token, with ``header``/``claims``/... overrides."""
    return lambda token: KEY.proof("POST", RESOURCE, access_token=token, **overrides)


PRIVATE_JWK = KEY.key.as_dict(private=True)
NOW = int(time.time())

# (id, builds the DPoP header values from the token, expected error_description); all 401 invalid_dpop_proof.
PROOF_DEFECTS: list[Any] = [
    pytest.param(lambda token: None, "A DPoP proof is required: send one in the DPoP header", id="no proof header"),
    pytest.param(
        lambda token: [proof()(token), proof()(token)], "Send exactly one DPoP proof header", id="two proof headers"
    ),
    pytest.param(
        lambda token: f"{proof()(token)}, {proof()(token)}", "Send exactly one DPoP proof header", id="two, joined"
    ),
    pytest.param(lambda token: "not-a-jwt", MALFORMED, id="not a JWT"),
    pytest.param(lambda token: "e30.e30", MALFORMED, id="two segments"),
    pytest.param(lambda token: "%%%.e30.AAAA", MALFORMED, id="header not base64url JSON"),
    pytest.param(
        lambda token: compact({"typ": "dpop+jwt", "alg": KEY.alg, "jwk": KEY.public_jwk}, b"[1, 2]", KEY.key, KEY.alg),
        MALFORMED,
        id="claims not a JSON object",
    ),
    pytest.param(lambda token: "x" * 8200, "The DPoP proof is too large", id="too large"),
    pytest.param(proof(header={"typ": None}), "The DPoP proof must have typ dpop+jwt", id="no typ"),
    pytest.param(proof(header={"typ": "JWT"}), "The DPoP proof must have typ dpop+jwt", id="typ JWT"),
    pytest.param(proof(header={"typ": "at+jwt"}), "The DPoP proof must have typ dpop+jwt", id="typ of an access token"),
    pytest.param(none_proof, "The DPoP proof is signed with an algorithm that is not allowed", id="alg none"),
    pytest.param(
        hs256_proof, "The DPoP proof is signed with an algorithm that is not allowed", id="symmetric alg HS256"
    ),
    pytest.param(
        proof(header={"alg": None}), "The DPoP proof is signed with an algorithm that is not allowed", id="no alg"
    ),
    pytest.param(
        forged_header_proof({"typ": "dpop+jwt", "alg": "ES256"}),
        "The DPoP proof must carry its public key in the jwk header",
        id="no jwk",
    ),
    pytest.param(
        forged_header_proof({"typ": "dpop+jwt", "alg": "ES256", "jwk": "a key"}),
        "The DPoP proof must carry its public key in the jwk header",
        id="jwk not an object",
    ),
    pytest.param(
        forged_header_proof({"typ": "dpop+jwt", "alg": "ES256", "jwk": PRIVATE_JWK}),
        "The DPoP proof's jwk must be a public key, without private members",
        id="private key in header",
    ),
    pytest.param(
        forged_header_proof({"typ": "dpop+jwt", "alg": "PS256", "jwk": KEY.public_jwk}),
        "The DPoP proof's jwk is not a valid key for its alg",
        id="EC key under an RSA alg",
    ),
    pytest.param(
        forged_header_proof({"typ": "dpop+jwt", "alg": "ES256", "jwk": {**KEY.public_jwk, "x": "AAAA"}}),
        "The DPoP proof's jwk is not a valid key for its alg",
        id="jwk not a point on the curve",
    ),
    pytest.param(small_rsa_proof, "The DPoP proof's RSA key is shorter than 2048 bits", id="RSA key of 1024 bits"),
    pytest.param(
        forged_header_proof({"typ": "dpop+jwt", "alg": "ES256", "jwk": KEY.public_jwk, "crit": ["exp"]}),
        "The DPoP proof names critical header parameters this server does not support",
        id="crit header",
    ),
    pytest.param(
        proof(header={"jwk": OTHER_KEY.public_jwk}),
        "The DPoP proof signature is invalid",
        id="signed by another key than its jwk",
    ),
    pytest.param(tampered_proof, "The DPoP proof signature is invalid", id="claims changed after signing"),
    pytest.param(proof(claims={"jti": None}), "The DPoP proof lacks the jti claim", id="no jti"),
    pytest.param(proof(claims={"htm": None}), "The DPoP proof lacks the htm claim", id="no htm"),
    pytest.param(proof(claims={"htu": None}), "The DPoP proof lacks the htu claim", id="no htu"),
    pytest.param(proof(claims={"iat": None}), "The DPoP proof lacks the iat claim", id="no iat"),
    pytest.param(proof(claims={"jti": ""}), "The DPoP proof has an invalid jti claim", id="empty jti"),
    pytest.param(proof(claims={"jti": 7}), "The DPoP proof has an invalid jti claim", id="numeric jti"),
    pytest.param(
        proof(claims={"htm": "GET"}), "The DPoP proof's htm does not match the request method", id="wrong htm"
    ),
    pytest.param(
        proof(claims={"htm": "post"}), "The DPoP proof's htm does not match the request method", id="htm lower case"
    ),
    pytest.param(
        proof(claims={"htu": "http://evil.example/mcp"}),
        "The DPoP proof's htu does not match the URL of this endpoint",
        id="htu with another host",
    ),
    pytest.param(
        proof(claims={"htu": "http://localhost:8080/mcp"}),
        "The DPoP proof's htu does not match the URL of this endpoint",
        id="htu with another port",
    ),
    pytest.param(
        proof(claims={"htu": "https://localhost/mcp"}),
        "The DPoP proof's htu does not match the URL of this endpoint",
        id="htu with another scheme",
    ),
    pytest.param(
        proof(claims={"htu": "http://localhost/other"}),
        "The DPoP proof's htu does not match the URL of this endpoint",
        id="htu with another path",
    ),
    pytest.param(
        proof(claims={"htu": "/mcp"}),
        "The DPoP proof's htu does not match the URL of this endpoint",
        id="htu relative",
    ),
    pytest.param(proof(claims={"iat": NOW - 3600}), "The DPoP proof is too old (iat)", id="stale iat (an hour ago)"),
    pytest.param(
        proof(claims={"iat": NOW + 3600}),
        "The DPoP proof was issued in the future (iat)",
        id="future iat (in an hour)",
    ),
    pytest.param(proof(claims={"iat": str(NOW)}), "The DPoP proof has an invalid iat claim", id="iat a string"),
    pytest.param(proof(claims={"iat": True}), "The DPoP proof has an invalid iat claim", id="iat a boolean"),
    pytest.param(proof(claims={"ath": None}), "The DPoP proof lacks the ath claim", id="no ath"),
    pytest.param(
        proof(claims={"ath": access_token_hash("another.access.token")}),
        "The DPoP proof's ath does not match the access token",
        id="ath of another token",
    ),
    pytest.param(
        proof(claims={"ath": 12}), "The DPoP proof's ath does not match the access token", id="ath not a string"
    ),
]


class TestProofDefects:
    @pytest.mark.parametrize(("build", "description"), PROOF_DEFECTS)
    def test_refused_with_invalid_dpop_proof(
        self, client: FlaskClient, tokens: Tokens, build: Callable[[str], Any], description: str
    ) -> None:
        token = bound(tokens)
        response = post(client, dpop_headers(token, build(token)))
        assert_refused(response, 401, "invalid_dpop_proof", description)

    def test_a_replayed_proof_is_refused(self, client: FlaskClient, tokens: Tokens) -> None:
        token = bound(tokens)
        once = KEY.proof("POST", RESOURCE, access_token=token)
        assert tools_listed(post(client, dpop_headers(token, once)))
        assert_refused(
            post(client, dpop_headers(token, once)), 401, "invalid_dpop_proof", "The DPoP proof was already used (jti)"
        )

    def test_a_refused_proof_is_not_remembered(self, client: FlaskClient, tokens: Tokens) -> None:
        token = bound(tokens)
        jti = "used-once-but-refused"
        wrong = KEY.proof("POST", RESOURCE, access_token=token, claims={"jti": jti, "htm": "GET"})
        assert post(client, dpop_headers(token, wrong)).status_code == 401
        right = KEY.proof("POST", RESOURCE, access_token=token, claims={"jti": jti})
        assert tools_listed(post(client, dpop_headers(token, right)))

    def test_the_window_edges(self, client: FlaskClient, tokens: Tokens) -> None:
        token = bound(tokens)
        now = int(time.time())
        # MCP_DPOP_PROOF_WINDOW (60 s) into the past, MCP_CLOCK_LEEWAY (30 s) into the future.
        assert tools_listed(post(client, dpop_headers(token, proof(claims={"iat": now - 55})(token))))
        assert tools_listed(post(client, dpop_headers(token, proof(claims={"iat": now + 25})(token))))
        assert_refused(
            post(client, dpop_headers(token, proof(claims={"iat": now - 65})(token))),
            401,
            "invalid_dpop_proof",
            "The DPoP proof is too old (iat)",
        )
        assert_refused(
            post(client, dpop_headers(token, proof(claims={"iat": now + 35})(token))),
            401,
            "invalid_dpop_proof",
            "The DPoP proof was issued in the future (iat)",
        )


class TestKeyBinding:
    def test_a_proof_from_another_key(self, client: FlaskClient, tokens: Tokens) -> None:
        token = bound(tokens)
        response = post(client, dpop_headers(token, OTHER_KEY.proof("POST", RESOURCE, access_token=token)))
        assert_refused(response, 401, "invalid_token", "The access token is bound to another DPoP key than the proof's")

    def test_a_bound_token_as_a_bearer_token(self, client: FlaskClient, tokens: Tokens) -> None:
        token = bound(tokens)
        for _ in range(2):  # the second time from the verified-token cache
            response = post(client, request_headers("tools/list", token=token))
            assert_refused(
                response,
                401,
                "invalid_token",
                "The access token is DPoP-bound: send it with the DPoP scheme and a proof",
            )

    def test_a_bound_token_with_a_proof_but_the_bearer_scheme(self, client: FlaskClient, tokens: Tokens) -> None:
        token = bound(tokens)
        headers = {
            **request_headers("tools/list", token=token),
            "DPoP": KEY.proof("POST", RESOURCE, access_token=token),
        }
        assert_refused(
            post(client, headers),
            401,
            "invalid_token",
            "The access token is DPoP-bound: send it with the DPoP scheme and a proof",
        )

    def test_an_unbound_token_with_the_dpop_scheme(self, client: FlaskClient, tokens: Tokens) -> None:
        token = tokens.mint()
        response = post(client, dpop_headers(token, KEY.proof("POST", RESOURCE, access_token=token)))
        assert_refused(
            response,
            401,
            "invalid_token",
            "The access token is not bound to a DPoP key: send it with the Bearer scheme",
        )

    @pytest.mark.parametrize(
        ("cnf", "description"),
        [
            pytest.param("a thumbprint", "The access token has an invalid cnf claim", id="cnf a string"),
            pytest.param({"jkt": ""}, "The access token has an invalid cnf claim", id="empty jkt"),
            pytest.param({"jkt": 5}, "The access token has an invalid cnf claim", id="numeric jkt"),
            pytest.param(
                {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"},
                "The access token is bound to a key in a way this server cannot check (cnf)",
                id="certificate-bound (RFC 8705)",
            ),
        ],
    )
    def test_a_cnf_this_server_cannot_check(
        self, client: FlaskClient, tokens: Tokens, cnf: object, description: str
    ) -> None:
        token = tokens.mint(cnf=cnf)
        for headers in (request_headers("tools/list", token=token), dpop_headers(token, proof()(token))):
            assert_refused(post(client, headers), 401, "invalid_token", description)

    def test_the_token_is_checked_before_the_proof(self, client: FlaskClient, tokens: Tokens) -> None:
        token = bound(tokens, exp=1_000_000)
        assert_refused(post(client, dpop_headers(token, None)), 401, "invalid_token", "The access token expired")


class TestAccepted:
    def test_a_bound_token_with_its_proof(self, client: FlaskClient, tokens: Tokens) -> None:
        token = bound(tokens)
        for _ in range(3):  # a fresh proof each time
            assert tools_listed(post(client, dpop_headers(token, KEY.proof("POST", RESOURCE, access_token=token))))

    @pytest.mark.parametrize(
        "htu",
        [
            pytest.param("http://localhost/mcp?x=1#frag", id="query and fragment ignored"),
            pytest.param("HTTP://LOCALHOST/mcp", id="scheme and host in upper case"),
            pytest.param("http://localhost:80/mcp", id="default port"),
            pytest.param("http://localhost/mcp/", id="trailing slash"),
        ],
    )
    def test_htu_normalization(self, client: FlaskClient, tokens: Tokens, htu: str) -> None:
        token = bound(tokens)
        assert tools_listed(post(client, dpop_headers(token, KEY.proof("POST", htu, access_token=token))))

    def test_htu_is_the_configured_url_never_the_host_header(
        self, make_app: Callable[..., Flask], tokens: Tokens
    ) -> None:
        client = make_app(MCP_RESOURCE_URL="https://mcp.example.com/mcp", MCP_AUDIENCE=RESOURCE).test_client()
        token = bound(tokens)
        headers = [*dpop_headers(token, None), ("Host", "mcp.example.com")]
        public = KEY.proof("POST", "https://mcp.example.com/mcp", access_token=token)
        response = client.post("/mcp", headers=[*headers, ("DPoP", public)], data=LIST)
        assert tools_listed(response)
        # What the app sees behind a proxy (http, another host) is not what the client signed for.
        as_seen = KEY.proof("POST", "http://localhost/mcp", access_token=token)
        response = client.post("/mcp", headers=[*headers, ("DPoP", as_seen)], data=LIST)
        assert response.status_code == 401
        assert (
            response.get_json()["error_description"] == "The DPoP proof's htu does not match the URL of this endpoint"
        )

    @pytest.mark.parametrize(
        "key",
        [
            pytest.param(DPoPKey.generate("EC", "ES256"), id="ES256"),
            pytest.param(DPoPKey.generate("EC", "ES384"), id="ES384"),
            pytest.param(DPoPKey.generate("EC", "ES512"), id="ES512"),
            pytest.param(DPoPKey.generate("RSA", "PS256"), id="PS256"),
            pytest.param(DPoPKey.generate("RSA", "RS256"), id="RS256"),
            pytest.param(DPoPKey.generate("OKP", "Ed25519"), id="Ed25519"),
        ],
    )
    def test_algorithms(self, client: FlaskClient, tokens: Tokens, key: DPoPKey) -> None:
        token = bound(tokens, key)
        assert tools_listed(post(client, dpop_headers(token, key.proof("POST", RESOURCE, access_token=token))))

    def test_eddsa_under_its_old_name(self, client: FlaskClient, tokens: Tokens) -> None:
        key = DPoPKey.generate("OKP", "EdDSA")
        token = bound(tokens, key)
        signed = key.proof("POST", RESOURCE, access_token=token)
        with pytest.warns(SecurityWarning, match="EdDSA is deprecated"):  # joserfc's, once per new key
            assert tools_listed(post(client, dpop_headers(token, signed)))

    def test_scheme_name_in_any_case(self, client: FlaskClient, tokens: Tokens) -> None:
        token = bound(tokens)
        headers = [(k, v) for k, v in dpop_headers(token, proof()(token)) if k != "Authorization"]
        assert tools_listed(post(client, [*headers, ("Authorization", f"dpop   {token}")]))

    def test_tools_see_the_caller(self, client: FlaskClient, tokens: Tokens) -> None:
        token = bound(tokens, sub="dpop-user")
        body = json.dumps(request_body("tools/call", {"name": "whoami", "arguments": {}}))
        headers = dpop_headers(token, proof()(token), "tools/call", "whoami")
        response = client.post("/mcp", headers=headers, data=body)
        assert response.status_code == 200
        assert b"dpop-user" in response.get_data()

    def test_an_unbound_bearer_token_still_works(self, client: FlaskClient, tokens: Tokens) -> None:
        assert tools_listed(post(client, request_headers("tools/list", token=tokens.mint())))


class TestMalformedAuthorization:
    @pytest.mark.parametrize(
        ("header", "description"),
        [
            pytest.param("DPoP", "The Authorization header carries no token", id="DPoP without a token"),
            pytest.param("DPoP a b", "The Authorization header must carry exactly one access token", id="two tokens"),
            pytest.param(
                "Token abc", "The Authorization header must use the Bearer or DPoP scheme", id="another scheme"
            ),
        ],
    )
    def test_400_invalid_request(self, client: FlaskClient, header: str, description: str) -> None:
        headers = {**request_headers("tools/list"), "Authorization": header}
        assert_refused(post(client, headers), 400, "invalid_request", description)


class TestModes:
    def test_off_refuses_the_dpop_scheme_and_offers_bearer_only(
        self, make_app: Callable[..., Flask], tokens: Tokens
    ) -> None:
        client = make_app(MCP_DPOP="off").test_client()
        token = bound(tokens)
        response = post(client, dpop_headers(token, proof()(token)))
        assert response.status_code == 400
        assert response.headers.getlist("WWW-Authenticate") == [
            f'Bearer error="invalid_request", error_description="The Authorization header must use the Bearer '
            f'scheme", {TAIL}'
        ]
        # Still RFC 9449 section 7.2: a token bound to a key is never accepted without its proof.
        response = post(client, request_headers("tools/list", token=token))
        assert response.status_code == 401
        assert response.headers.getlist("WWW-Authenticate") == [
            'Bearer error="invalid_token", error_description="The access token is DPoP-bound: send it with the '
            f'DPoP scheme and a proof", {TAIL}'
        ]
        assert tools_listed(post(client, request_headers("tools/list", token=tokens.mint())))
        assert "dpop_signing_alg_values_supported" not in client.get("/.well-known/oauth-protected-resource").get_json()

    def test_required_refuses_bearer_tokens_and_challenges_with_dpop_only(
        self, make_app: Callable[..., Flask], tokens: Tokens
    ) -> None:
        client = make_app(MCP_DPOP="required", MCP_DPOP_ALGORITHMS="ES256 PS256").test_client()
        dpop_only = f'DPoP algs="ES256 PS256", {TAIL}'
        response = post(client, request_headers("tools/list"))
        assert response.status_code == 401
        assert response.headers.getlist("WWW-Authenticate") == [dpop_only]
        response = post(client, request_headers("tools/list", token=tokens.mint()))
        assert response.status_code == 401
        assert response.headers.getlist("WWW-Authenticate") == [
            'DPoP error="invalid_token", error_description="This resource accepts only DPoP-bound access tokens", '
            f'algs="ES256 PS256", {TAIL}'
        ]
        assert response.get_json() == {
            "error": "invalid_token",
            "error_description": "This resource accepts only DPoP-bound access tokens",
        }
        token = bound(tokens)
        assert tools_listed(post(client, dpop_headers(token, proof()(token))))
        ed = DPoPKey.generate("OKP", "Ed25519")
        token = bound(tokens, ed)
        response = post(client, dpop_headers(token, ed.proof("POST", RESOURCE, access_token=token)))
        assert response.headers.getlist("WWW-Authenticate") == [
            'DPoP error="invalid_dpop_proof", error_description="The DPoP proof is signed with an algorithm that '
            f'is not allowed", algs="ES256 PS256", {TAIL}'
        ]

    def test_the_window_is_configurable(self, make_app: Callable[..., Flask], tokens: Tokens) -> None:
        client = make_app(MCP_DPOP_PROOF_WINDOW="10").test_client()
        token = bound(tokens)
        response = post(client, dpop_headers(token, proof(claims={"iat": int(time.time()) - 20})(token)))
        assert_refused(response, 401, "invalid_dpop_proof", "The DPoP proof is too old (iat)")


class TestNonces:
    def test_a_nonce_is_required_then_accepted(self, make_app: Callable[..., Flask], tokens: Tokens) -> None:
        client = make_app(MCP_DPOP_NONCE="1").test_client()
        token = bound(tokens)
        first = post(client, dpop_headers(token, proof()(token)))
        assert_refused(first, 401, "use_dpop_nonce", "This server requires a nonce in the DPoP proof")
        nonce = first.headers["DPoP-Nonce"]
        assert len(nonce) == 32
        retried = post(client, dpop_headers(token, proof(nonce=nonce)(token)))
        assert tools_listed(retried)
        assert "DPoP-Nonce" not in retried.headers  # still fresh: no new one yet

    @pytest.mark.parametrize(
        "nonce",
        [
            pytest.param("not-a-nonce", id="made up"),
            pytest.param(b64(b"\x00" * 24), id="forged"),
            pytest.param(7, id="not a string"),
        ],
    )
    def test_a_wrong_nonce(self, make_app: Callable[..., Flask], tokens: Tokens, nonce: object) -> None:
        client = make_app(MCP_DPOP_NONCE="1").test_client()
        token = bound(tokens)
        response = post(client, dpop_headers(token, proof(claims={"nonce": nonce})(token)))
        assert_refused(response, 401, "use_dpop_nonce", "The DPoP proof's nonce is invalid or expired")
        assert response.headers["DPoP-Nonce"] != nonce

    def test_an_old_nonce_is_replaced_and_an_expired_one_refused(
        self, make_app: Callable[..., Flask], tokens: Tokens
    ) -> None:
        app = make_app(MCP_DPOP_NONCE="1", MCP_STATE_SECRET="s" * 32)
        client = app.test_client()
        token = bound(tokens)
        old = Nonces("s" * 32, "resource server", clock=lambda: time.time() - 200).issue()
        response = post(client, dpop_headers(token, proof(nonce=old)(token)))
        assert tools_listed(response)
        fresh = response.headers["DPoP-Nonce"]  # past half its 300 s life: a new one rides along
        assert fresh != old
        assert tools_listed(post(client, dpop_headers(token, proof(nonce=fresh)(token))))
        expired = Nonces("s" * 32, "resource server", clock=lambda: time.time() - 400).issue()
        response = post(client, dpop_headers(token, proof(nonce=expired)(token)))
        assert_refused(response, 401, "use_dpop_nonce", "The DPoP proof's nonce is invalid or expired")

    def test_the_authorization_servers_nonces_are_not_the_resources(
        self, make_app: Callable[..., Flask], tokens: Tokens
    ) -> None:
        client = make_app(MCP_DPOP_NONCE="1", MCP_STATE_SECRET="s" * 32).test_client()
        token = bound(tokens)
        foreign = Nonces("s" * 32, "authorization server").issue()
        response = post(client, dpop_headers(token, proof(nonce=foreign)(token)))
        assert_refused(response, 401, "use_dpop_nonce", "The DPoP proof's nonce is invalid or expired")


class TestIntrospection:
    def test_cnf_in_the_introspection_answer_binds_an_opaque_token(
        self, make_app: Callable[..., Flask], issuer: MockIssuer
    ) -> None:
        user, secret = issuer.introspection_client
        client = make_app(
            MCP_INTROSPECTION_URL=issuer.introspection_url,
            MCP_INTROSPECTION_CLIENT_ID=user,
            MCP_INTROSPECTION_CLIENT_SECRET=secret,
        ).test_client()
        opaque = "opaque-dpop-bound-token"
        issuer.opaque_tokens[opaque] = {
            "active": True,
            "iss": issuer.issuer,
            "sub": "carol",
            "aud": RESOURCE,
            "exp": int(time.time()) + 600,
            "cnf": {"jkt": KEY.jkt},
        }
        assert_refused(
            post(client, request_headers("tools/list", token=opaque)),
            401,
            "invalid_token",
            "The access token is DPoP-bound: send it with the DPoP scheme and a proof",
        )
        assert tools_listed(post(client, dpop_headers(opaque, proof()(opaque))))
        response = post(client, dpop_headers(opaque, OTHER_KEY.proof("POST", RESOURCE, access_token=opaque)))
        assert_refused(response, 401, "invalid_token", "The access token is bound to another DPoP key than the proof's")


class TestUnits:
    def test_access_token_hash_is_rfc_9449s_example(self) -> None:
        # The access token of RFC 9449's resource request example (section 7) and the ath of its proof.
        token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
        assert access_token_hash(token) == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"

    @pytest.mark.parametrize(
        ("url", "normal"),
        [
            pytest.param("https://Server.Example.com/mcp", "https://server.example.com/mcp", id="host case"),
            pytest.param("https://server.example.com:443/mcp", "https://server.example.com/mcp", id="default port"),
            pytest.param("https://server.example.com:8443/mcp", "https://server.example.com:8443/mcp", id="port"),
            pytest.param("https://server.example.com", "https://server.example.com/", id="empty path"),
            pytest.param("http://[::1]:5000/mcp/?a#b", "http://[::1]:5000/mcp", id="ipv6, slash, query"),
            pytest.param("ftp://server.example.com/mcp", None, id="not http"),
            pytest.param("https://user@server.example.com/mcp", None, id="userinfo"),
            pytest.param("https://server.example.com:99999/mcp", None, id="bad port"),
            pytest.param("mcp", None, id="relative"),
        ],
    )
    def test_normalize_htu(self, url: str, normal: str | None) -> None:
        assert normalize_htu(url) == normal

    def test_confirmed_key(self) -> None:
        assert confirmed_key({}) is None
        assert confirmed_key({"cnf": {"jkt": "abc"}}) == "abc"
        with pytest.raises(InvalidToken):
            confirmed_key({"cnf": []})

    def test_memory_replay_cache_forgets_after_the_ttl_and_stays_bounded(self) -> None:
        now = [1000.0]
        cache = MemoryReplayCache(capacity=3, clock=lambda: now[0])
        assert cache.first_use(b"a", 10)
        assert not cache.first_use(b"a", 10)
        now[0] += 11
        assert cache.first_use(b"a", 10)  # forgotten once it could no longer be accepted
        for key in (b"b", b"c", b"d"):
            assert cache.first_use(key, 10)
        assert len(cache) == 3

    def test_nonces_are_bound_to_their_secret_label_and_time(self) -> None:
        now = [1_000_000.0]
        nonces = Nonces("secret" * 6, "resource server", clock=lambda: now[0])
        nonce = nonces.issue()
        assert nonces.age(nonce) == 0
        assert Nonces("secret" * 6, "authorization server").age(nonce) is None
        assert Nonces("other" * 7, "resource server", clock=lambda: now[0]).age(nonce) is None
        now[0] += 301
        assert nonces.age(nonce) is None
        tampered = base64.urlsafe_b64encode(
            (int(now[0]).to_bytes(8, "big")) + base64.urlsafe_b64decode(nonce + "==")[8:]
        ).decode()
        assert nonces.age(tampered.rstrip("=")) is None

    def test_a_proofs_key_is_imported_once_per_header(self, tokens: Tokens) -> None:
        verifier = ProofVerifier(algorithms=["ES256"], window=60, leeway=30, replays=MemoryReplayCache())
        url = normalize_htu(RESOURCE)
        assert url is not None
        first = verifier.verify([KEY.proof("POST", RESOURCE)], method="POST", url=url)
        second = verifier.verify([KEY.proof("POST", RESOURCE)], method="POST", url=url)
        assert first.jkt == second.jkt == KEY.jkt
        assert len(verifier._keys) == 1  # the same protected header: its key was imported once
        verifier.verify([KEY.proof("POST", RESOURCE, claims={"jti": "x"})], method="POST", url=url)
        with pytest.raises(ProofError, match=r"^The DPoP proof was already used \(jti\)$"):
            verifier.verify([KEY.proof("POST", RESOURCE, claims={"jti": "x"})], method="POST", url=url)
