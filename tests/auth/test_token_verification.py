"""Several issuers, each with its own keys and audiences; RFC 7662 introspection for opaque tokens."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from app import create_app
from app import stop_worker
from app.auth import introspection
from app.auth.token_verification import named_issuer
from app.settings import Settings
from tests.conftest import RESOURCE
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import call_tool
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers
from tests.support.jsonrpc import result_of

METADATA = "http://localhost/.well-known/oauth-protected-resource/mcp"


@pytest.fixture(scope="module")
def second_issuer() -> Iterator[MockIssuer]:
    with MockIssuer(path="/tenant-b") as mock:
        yield mock


def make_app(tmp_path: Path, **env: str) -> Flask:
    return create_app(Settings.from_mapping({"MCP_RESOURCE_URL": RESOURCE, "MCP_INSTANCE_PATH": str(tmp_path), **env}))


def whoami(app: Flask, token: str) -> tuple[int, dict[str, object] | str]:
    headers, body = call_tool("whoami", token=token)
    response = app.test_client().post("/mcp", headers=headers, data=body)
    response.close()
    if response.status_code != 200:
        return response.status_code, response.headers["WWW-Authenticate"]
    return 200, json.loads(result_of(response.content_type, response.get_data())["result"]["content"][0]["text"])


def challenge(description: str) -> str:
    return f'Bearer error="invalid_token", error_description="{description}", resource_metadata="{METADATA}"'


class TestSeveralIssuers:
    def test_each_issuer_with_its_own_keys(self, issuer: MockIssuer, second_issuer: MockIssuer, tmp_path: Path) -> None:
        app = make_app(tmp_path, MCP_ISSUER=f"{issuer.issuer},{second_issuer.issuer}")
        status, body = whoami(app, issuer.mint(RESOURCE, sub="from-a"))
        assert (status, body["sub"], body["issuer"]) == (200, "from-a", issuer.issuer)  # type: ignore[index]
        status, body = whoami(app, second_issuer.mint(RESOURCE, sub="from-b"))
        assert (status, body["sub"], body["issuer"]) == (200, "from-b", second_issuer.issuer)  # type: ignore[index]
        stop_worker(app)

    def test_a_token_is_checked_only_against_the_keys_of_the_issuer_it_names(
        self, issuer: MockIssuer, second_issuer: MockIssuer, tmp_path: Path
    ) -> None:
        app = make_app(tmp_path, MCP_ISSUER=f"{issuer.issuer},{second_issuer.issuer}")
        # Signed with B's key (and B's kid) but claiming to come from A.
        forged = second_issuer.mint(RESOURCE, iss=issuer.issuer)
        assert whoami(app, forged) == (401, challenge("The access token is signed with an unknown key"))
        unknown = issuer.mint(RESOURCE, iss="https://elsewhere.example.com")
        assert whoami(app, unknown) == (401, challenge("The access token was issued by another issuer"))
        stop_worker(app)

    def test_per_issuer_audiences(self, issuer: MockIssuer, second_issuer: MockIssuer, tmp_path: Path) -> None:
        issuers = json.dumps(
            [{"issuer": issuer.issuer, "audience": RESOURCE}, {"issuer": second_issuer.issuer, "audience": "api://b"}]
        )
        app = make_app(tmp_path, MCP_ISSUERS=issuers)
        assert whoami(app, second_issuer.mint("api://b"))[0] == 200
        assert whoami(app, second_issuer.mint(RESOURCE)) == (
            401,
            challenge("The access token was not issued for this resource"),
        )
        assert whoami(app, issuer.mint("api://b")) == (
            401,
            challenge("The access token was not issued for this resource"),
        )
        stop_worker(app)

    def test_one_issuers_tokens_never_fetch_anothers_keys(
        self, issuer: MockIssuer, second_issuer: MockIssuer, tmp_path: Path
    ) -> None:
        app = make_app(tmp_path, MCP_ISSUER=f"{issuer.issuer},{second_issuer.issuer}")
        before = second_issuer.key_fetches()
        for n in range(5):
            whoami(app, issuer.mint(RESOURCE, sub=f"u{n}", header={"kid": f"random-{n}"}))
        assert second_issuer.key_fetches() == before
        stop_worker(app)

    @pytest.mark.parametrize(
        ("token", "expected"),
        [
            pytest.param("e30.eyJpc3MiOiJodHRwczovL2EifQ.sig", "https://a", id="iss"),
            pytest.param("e30.eyJzdWIiOiJ4In0.sig", None, id="no iss"),
            pytest.param("e30.bm90IGpzb24.sig", None, id="not json"),
            pytest.param("e30.W10.sig", None, id="a list"),
            pytest.param("e30.eyJpc3MiOjV9.sig", None, id="iss not a string"),
            pytest.param("nodots", None, id="no payload"),
        ],
    )
    def test_named_issuer(self, token: str, expected: str | None) -> None:
        assert named_issuer(token) == expected


@pytest.fixture
def introspecting(issuer: MockIssuer, tmp_path: Path) -> Iterator[Flask]:
    client_id, secret = issuer.introspection_client
    app = make_app(
        tmp_path,
        MCP_ISSUER=issuer.issuer,
        MCP_INTROSPECTION_URL=issuer.introspection_url,
        MCP_INTROSPECTION_CLIENT_ID=client_id,
        MCP_INTROSPECTION_CLIENT_SECRET=secret,
    )
    yield app
    stop_worker(app)
    issuer.opaque_tokens.clear()


def active(issuer: MockIssuer, **fields: object) -> dict[str, object]:
    answer: dict[str, object] = {
        "active": True,
        "sub": "opaque-user",
        "client_id": "svc",
        "scope": "todo:read",
        "aud": RESOURCE,
        "iss": issuer.issuer,
        "exp": int(time.time()) + 600,
    }
    answer.update(fields)
    return {k: v for k, v in answer.items() if v is not None}


class TestIntrospection:
    def test_an_active_opaque_token(self, introspecting: Flask, issuer: MockIssuer) -> None:
        issuer.opaque_tokens["opaque-1"] = active(issuer)
        before = issuer.introspections()
        status, body = whoami(introspecting, "opaque-1")
        assert status == 200
        assert body == {
            "sub": "opaque-user",
            "client_id": "svc",
            "scopes": ["todo:read"],
            "issuer": issuer.issuer,
            "org_id": None,
            "expires_at": issuer.opaque_tokens["opaque-1"]["exp"],
        }
        # Cached until it expires: the second call does not ask again.
        assert whoami(introspecting, "opaque-1")[0] == 200
        assert issuer.introspections() == before + 1

    @pytest.mark.parametrize(
        ("answer", "description"),
        [
            pytest.param({"active": False}, "The access token is not active", id="inactive"),
            pytest.param({"aud": None}, "The access token was not issued for this resource", id="no aud"),
            pytest.param({"aud": "https://other/mcp"}, "The access token was not issued for this resource", id="aud"),
            pytest.param({"iss": "https://evil.example"}, "The access token was issued by another issuer", id="iss"),
            pytest.param({"exp": 1_000_000}, "The access token expired", id="expired"),
            pytest.param({"sub": None, "client_id": None}, "The access token has no subject", id="no subject"),
            # client_id is never taken for sub: a client and a user of the same name would be one identity.
            pytest.param({"sub": None, "client_id": "alice"}, "The access token has no subject", id="client-id-only"),
            pytest.param({"iss": None}, "The introspection answer names no issuer (iss)", id="no iss"),
            pytest.param({"token_type": "refresh_token"}, "The token is not an access token", id="refresh-type"),
            pytest.param(
                {"token_type": "urn:ietf:params:oauth:token-type:id_token"},
                "The token is not an access token",
                id="id-token-type",
            ),
            pytest.param({"typ": "Refresh"}, "The token is not an access token", id="keycloak-refresh"),
            pytest.param({"typ": "ID"}, "The token is not an access token", id="keycloak-id"),
        ],
    )
    def test_refused(
        self, introspecting: Flask, issuer: MockIssuer, answer: dict[str, object], description: str
    ) -> None:
        issuer.opaque_tokens["opaque-2"] = active(issuer, **answer) if answer != {"active": False} else answer
        assert whoami(introspecting, "opaque-2") == (401, challenge(description))

    @pytest.mark.parametrize(
        "token_type", ["Bearer", "bearer", "access_token", "urn:ietf:params:oauth:token-type:access_token", "N_A"]
    )
    def test_access_token_types_are_accepted(self, introspecting: Flask, issuer: MockIssuer, token_type: str) -> None:
        issuer.opaque_tokens["opaque-typed"] = active(issuer, token_type=token_type, typ="Bearer")
        assert whoami(introspecting, "opaque-typed")[0] == 200

    def test_junk_tokens_never_push_an_accepted_answer_out(
        self, introspecting: Flask, issuer: MockIssuer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """10,000 random opaque tokens used to evict every real user's cached answer; refused ones are cached apart."""
        monkeypatch.setattr(introspection, "CACHE_SIZE", 5)
        monkeypatch.setattr(introspection, "REFUSED_CACHE_SIZE", 3)
        issuer.opaque_tokens["real-user"] = active(issuer)
        assert whoami(introspecting, "real-user")[0] == 200
        for n in range(12):
            assert whoami(introspecting, f"junk-{n}")[0] == 401
        before = issuer.introspections()
        assert whoami(introspecting, "real-user")[0] == 200
        assert issuer.introspections() == before  # still cached
        verifier = introspecting.extensions["mcp_auth"].verifier.introspection
        assert len(verifier._refused) == 3  # bounded on its own
        assert list(verifier._answers) == [hashlib.sha256(b"real-user").digest()]

    def test_an_unknown_token_is_inactive_and_that_is_cached_briefly(
        self, introspecting: Flask, issuer: MockIssuer
    ) -> None:
        before = issuer.introspections()
        assert whoami(introspecting, "never-issued") == (401, challenge("The access token is not active"))
        assert whoami(introspecting, "never-issued")[0] == 401
        assert issuer.introspections() == before + 1

    def test_endpoint_down_is_503_never_a_guess(self, introspecting: Flask, issuer: MockIssuer) -> None:
        issuer.opaque_tokens["opaque-3"] = active(issuer)
        issuer.down = True
        try:
            response = introspecting.test_client().post(
                "/mcp", headers=request_headers("tools/list", token="opaque-3"), json=request_body("tools/list")
            )
        finally:
            issuer.down = False
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "30"
        assert response.get_json()["error"] == "temporarily_unavailable"

    def test_an_outage_is_logged_and_counted_as_introspection_not_keys(
        self, introspecting: Flask, issuer: MockIssuer, caplog: pytest.LogCaptureFixture
    ) -> None:
        from prometheus_client import REGISTRY

        def failures(reason: str) -> float:
            return REGISTRY.get_sample_value("mcp_auth_failures_total", {"reason": reason}) or 0.0

        before = failures("introspection_unavailable"), failures("keys_unavailable")
        issuer.opaque_tokens["opaque-4"] = active(issuer)
        issuer.down = True
        try:
            response = introspecting.test_client().post(
                "/mcp", headers=request_headers("tools/list", token="opaque-4"), json=request_body("tools/list")
            )
        finally:
            issuer.down = False
        assert response.status_code == 503
        refusals = [r.getMessage() for r in caplog.records if r.name == "app.auth"]
        assert refusals == ["refusing a request: the token introspection endpoint did not answer usably"]
        assert (failures("introspection_unavailable"), failures("keys_unavailable")) == (before[0] + 1, before[1])

    def test_wrong_client_credentials_are_503(self, issuer: MockIssuer, tmp_path: Path) -> None:
        app = make_app(
            tmp_path,
            MCP_ISSUER=issuer.issuer,
            MCP_INTROSPECTION_URL=issuer.introspection_url,
            MCP_INTROSPECTION_CLIENT_ID="mcp-server",
            MCP_INTROSPECTION_CLIENT_SECRET="wrong",
        )
        issuer.opaque_tokens["opaque-4"] = active(issuer)
        response = app.test_client().post(
            "/mcp", headers=request_headers("tools/list", token="opaque-4"), json=request_body("tools/list")
        )
        assert response.status_code == 503
        stop_worker(app)
        issuer.opaque_tokens.clear()

    def test_jwts_are_still_verified_locally(self, introspecting: Flask, issuer: MockIssuer) -> None:
        before = issuer.introspections()
        assert whoami(introspecting, issuer.mint(RESOURCE))[0] == 200
        assert issuer.introspections() == before
