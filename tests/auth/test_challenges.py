"""RFC 6750 section 3 challenges: exact WWW-Authenticate strings, statuses and bodies."""

from __future__ import annotations

import json

import pytest
from flask import Response

from app.auth.challenges import BearerError
from app.auth.challenges import Challenger
from app.auth.challenges import InsufficientScope
from app.auth.challenges import InvalidDPoPProof
from app.auth.challenges import InvalidRequest
from app.auth.challenges import InvalidToken
from app.auth.challenges import KeysUnavailable
from app.auth.challenges import MissingToken
from app.auth.challenges import UseDPoPNonce
from app.auth.challenges import quoted_safe

METADATA = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
RM = f'resource_metadata="{METADATA}"'
SCOPES = ("todo:read", "todo:write")


def body_of(response: Response) -> object:
    return json.loads(response.get_data(as_text=True))


class TestErrorClasses:
    @pytest.mark.parametrize(
        ("cls", "status", "error"),
        [
            pytest.param(MissingToken, 401, None, id="missing-token"),
            pytest.param(InvalidRequest, 400, "invalid_request", id="invalid-request"),
            pytest.param(InvalidToken, 401, "invalid_token", id="invalid-token"),
            pytest.param(InsufficientScope, 403, "insufficient_scope", id="insufficient-scope"),
        ],
    )
    def test_status_and_error_code(self, cls: type[BearerError], status: int, error: str | None) -> None:
        instance = cls("what happened")
        assert (instance.status_code, instance.error) == (status, error)
        assert (instance.description, str(instance), instance.scope) == ("what happened", "what happened", None)
        assert isinstance(instance, BearerError)

    def test_scope_becomes_a_tuple(self) -> None:
        assert InsufficientScope("x", scope=iter(["b", "a"])).scope == ("b", "a")

    def test_keys_unavailable(self) -> None:
        error = KeysUnavailable(retry_after=30)
        assert (str(error), error.retry_after) == ("signing keys are unavailable", 30)
        assert not isinstance(error, BearerError)


class TestWWWAuthenticate:
    @pytest.mark.parametrize(
        ("default_scopes", "error", "header"),
        [
            pytest.param((), MissingToken("An access token is required"), f"Bearer {RM}", id="missing-token"),
            pytest.param(
                SCOPES,
                MissingToken("An access token is required"),
                f'Bearer scope="todo:read todo:write", {RM}',
                id="missing-token-with-scopes",
            ),
            pytest.param(
                (),
                InvalidToken("The access token expired"),
                f'Bearer error="invalid_token", error_description="The access token expired", {RM}',
                id="invalid-token",
            ),
            pytest.param(
                SCOPES,
                InvalidToken("The access token expired"),
                'Bearer error="invalid_token", error_description="The access token expired", '
                f'scope="todo:read todo:write", {RM}',
                id="invalid-token-with-scopes",
            ),
            pytest.param(
                (),
                InvalidRequest("The Authorization header carries no token"),
                f'Bearer error="invalid_request", error_description="The Authorization header carries no token", {RM}',
                id="invalid-request",
            ),
            pytest.param(
                SCOPES,
                InsufficientScope("This call requires the scopes: todo:delete", scope=["todo:delete"]),
                'Bearer error="insufficient_scope", error_description="This call requires the scopes: todo:delete", '
                f'scope="todo:delete", {RM}',
                id="insufficient-scope-names-the-errors-scopes",
            ),
            pytest.param(
                (),
                InsufficientScope("Needs more", scope=["todo:read", "todo:write", "todo:delete"]),
                'Bearer error="insufficient_scope", error_description="Needs more", '
                f'scope="todo:read todo:write todo:delete", {RM}',
                id="insufficient-scope-several",
            ),
            pytest.param(
                (),
                InvalidToken('Bad "quote" \\ back\r\nslash caf\u00e9 \u2713'),
                f'Bearer error="invalid_token", error_description="Bad ?quote? ? back??slash caf? ?", {RM}',
                id="description-sanitised",
            ),
            pytest.param(
                (),
                InsufficientScope("x", scope=['to"do', "r\u00e9ad"]),
                f'Bearer error="insufficient_scope", error_description="x", scope="to?do r?ad", {RM}',
                id="scope-sanitised",
            ),
        ],
    )
    def test_header(self, default_scopes: tuple[str, ...], error: BearerError, header: str) -> None:
        assert Challenger(METADATA, default_scopes).www_authenticate(error) == [header]

    def test_metadata_url_is_sanitised_once(self) -> None:
        challenger = Challenger('https://mcp.example.com/"x"')
        assert challenger.www_authenticate(MissingToken("no")) == [
            'Bearer resource_metadata="https://mcp.example.com/?x?"'
        ]


ALGS = 'algs="ES256 PS256"'


class TestWithDPoP:
    """RFC 9449 section 7.1: a DPoP challenge beside the Bearer one, or alone when DPoP is required."""

    @pytest.mark.parametrize(
        ("error", "bearer", "dpop"),
        [
            pytest.param(
                MissingToken("An access token is required"),
                f'Bearer scope="todo:read todo:write", {RM}',
                f'DPoP {ALGS}, scope="todo:read todo:write", {RM}',
                id="no token: neither names an error",
            ),
            pytest.param(
                InvalidToken("The access token expired"),
                f'Bearer error="invalid_token", error_description="The access token expired", '
                f'scope="todo:read todo:write", {RM}',
                f'DPoP error="invalid_token", error_description="The access token expired", {ALGS}, '
                f'scope="todo:read todo:write", {RM}',
                id="a token error goes on both",
            ),
            pytest.param(
                InsufficientScope("Needs todo:delete", scope=["todo:delete"]),
                f'Bearer error="insufficient_scope", error_description="Needs todo:delete", scope="todo:delete", {RM}',
                f'DPoP error="insufficient_scope", error_description="Needs todo:delete", {ALGS}, '
                f'scope="todo:delete", {RM}',
                id="insufficient scope on both",
            ),
            pytest.param(
                InvalidDPoPProof("The DPoP proof is too old (iat)"),
                f'Bearer scope="todo:read todo:write", {RM}',
                f'DPoP error="invalid_dpop_proof", error_description="The DPoP proof is too old (iat)", {ALGS}, '
                f'scope="todo:read todo:write", {RM}',
                id="a proof error only on DPoP",
            ),
            pytest.param(
                UseDPoPNonce("This server requires a nonce in the DPoP proof", nonce="n-1"),
                f'Bearer scope="todo:read todo:write", {RM}',
                'DPoP error="use_dpop_nonce", error_description="This server requires a nonce in the DPoP proof", '
                f'{ALGS}, scope="todo:read todo:write", {RM}',
                id="a nonce challenge only on DPoP",
            ),
        ],
    )
    def test_both_schemes(self, error: BearerError, bearer: str, dpop: str) -> None:
        challenger = Challenger(METADATA, SCOPES, dpop_algorithms=("ES256", "PS256"))
        assert challenger.www_authenticate(error) == [bearer, dpop]
        response = challenger.response(error)
        assert response.headers.getlist("WWW-Authenticate") == [bearer, dpop]

    def test_required_drops_bearer(self) -> None:
        challenger = Challenger(METADATA, (), bearer=False, dpop_algorithms=("ES256",))
        assert challenger.www_authenticate(InvalidDPoPProof("x")) == [
            f'DPoP error="invalid_dpop_proof", error_description="x", algs="ES256", {RM}'
        ]

    def test_nonce_challenge_carries_the_nonce(self) -> None:
        response = Challenger(METADATA, dpop_algorithms=("ES256",)).response(UseDPoPNonce("x", nonce="abc"))
        assert response.status_code == 401
        assert response.headers["DPoP-Nonce"] == "abc"
        assert body_of(response) == {"error": "use_dpop_nonce", "error_description": "x"}

    def test_proof_errors(self) -> None:
        assert (InvalidDPoPProof.status_code, InvalidDPoPProof.error, InvalidDPoPProof.proof_error) == (
            401,
            "invalid_dpop_proof",
            True,
        )
        assert (UseDPoPNonce.status_code, UseDPoPNonce.error, UseDPoPNonce.proof_error) == (401, "use_dpop_nonce", True)
        assert not InvalidToken.proof_error


class TestQuotedSafe:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            pytest.param("plain text, with: punctuation!", "plain text, with: punctuation!", id="plain"),
            pytest.param('"', "?", id="double-quote"),
            pytest.param("\\", "?", id="backslash"),
            pytest.param("\r\n", "??", id="crlf"),
            pytest.param("\t", "?", id="tab"),
            pytest.param("\x00\x1f\x7f", "???", id="controls-and-delete"),
            pytest.param("\u00e9\u00e8", "??", id="latin-1"),
            pytest.param("\U0001f600", "?", id="emoji-one-code-point"),
            pytest.param("", "", id="empty"),
        ],
    )
    def test_replaces_unsafe_characters(self, value: str, expected: str) -> None:
        assert quoted_safe(value) == expected

    def test_every_allowed_character_is_kept(self) -> None:
        allowed = "".join(chr(c) for c in range(0x20, 0x7F) if c not in (0x22, 0x5C))
        assert quoted_safe(allowed) == allowed


class TestResponse:
    @pytest.mark.parametrize(
        ("error", "status", "body"),
        [
            pytest.param(
                MissingToken("An access token is required"),
                401,
                {"error": "unauthorized", "error_description": "An access token is required"},
                id="missing-token",
            ),
            pytest.param(
                InvalidRequest("The Authorization header must use the Bearer scheme"),
                400,
                {
                    "error": "invalid_request",
                    "error_description": "The Authorization header must use the Bearer scheme",
                },
                id="invalid-request",
            ),
            pytest.param(
                InvalidToken('The "access" token\nexpired'),
                401,
                {"error": "invalid_token", "error_description": 'The "access" token\nexpired'},
                id="invalid-token-raw-description-in-json",
            ),
            pytest.param(
                InsufficientScope("This call requires the scopes: todo:write", scope=["todo:write"]),
                403,
                {"error": "insufficient_scope", "error_description": "This call requires the scopes: todo:write"},
                id="insufficient-scope",
            ),
        ],
    )
    def test_response(self, error: BearerError, status: int, body: dict[str, str]) -> None:
        challenger = Challenger(METADATA, SCOPES)
        response = challenger.response(error)
        assert response.status_code == status
        assert body_of(response) == body
        assert response.mimetype == "application/json"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers.getlist("WWW-Authenticate") == challenger.www_authenticate(error)
        assert "Retry-After" not in response.headers
        assert "DPoP-Nonce" not in response.headers

    def test_unavailable(self) -> None:
        response = Challenger.unavailable(KeysUnavailable(retry_after=17))
        assert response.status_code == 503
        assert body_of(response) == {
            "error": "temporarily_unavailable",
            "error_description": "The server cannot verify access tokens right now; retry later",
        }
        assert response.mimetype == "application/json"
        assert response.headers["Retry-After"] == "17"
        assert response.headers["Cache-Control"] == "no-store"
        assert "WWW-Authenticate" not in response.headers
