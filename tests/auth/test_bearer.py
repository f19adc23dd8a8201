"""RFC 6750 section 2.1: the bearer token from the Authorization header, or a precise 400."""

from __future__ import annotations

import pytest

from app.auth.bearer import extract_bearer_token
from app.auth.challenges import InvalidRequest

WRONG_SCHEME = "The Authorization header must use the Bearer scheme"
NO_TOKEN = "The Authorization header carries no token"
NOT_ONE_TOKEN = "The Authorization header must carry exactly one bearer token"


class TestNoCredentials:
    @pytest.mark.parametrize(
        "header",
        [
            pytest.param(None, id="absent"),
            pytest.param("", id="empty"),
            pytest.param("   ", id="spaces"),
            pytest.param(" \t ", id="spaces-and-tab"),
        ],
    )
    def test_no_header_value_means_no_token(self, header: str | None) -> None:
        assert extract_bearer_token(header) is None


class TestWellFormed:
    @pytest.mark.parametrize(
        ("header", "token"),
        [
            pytest.param("Bearer abc", "abc", id="canonical"),
            pytest.param("bearer abc", "abc", id="lower-case-scheme"),
            pytest.param("BEARER   abc", "abc", id="upper-case-scheme-several-spaces"),
            pytest.param("BeArEr abc", "abc", id="mixed-case-scheme"),
            pytest.param("  Bearer abc \t", "abc", id="surrounding-whitespace"),
            pytest.param("Bearer a+/=", "a+/=", id="plus-slash-padding"),
            pytest.param("Bearer a-._~+/", "a-._~+/", id="every-token68-symbol"),
            pytest.param("Bearer ~", "~", id="single-tilde"),
            pytest.param("Bearer abc==", "abc==", id="double-padding"),
            pytest.param("Bearer eyJh.eyJz.c2ln", "eyJh.eyJz.c2ln", id="jwt-shape"),
            pytest.param("Bearer " + "A" * 20_000, "A" * 20_000, id="long"),
        ],
    )
    def test_token_is_returned(self, header: str, token: str) -> None:
        assert extract_bearer_token(header) == token


class TestMalformed:
    @pytest.mark.parametrize(
        ("header", "description"),
        [
            pytest.param("Bearer", NO_TOKEN, id="scheme-only"),
            pytest.param("Bearer ", NO_TOKEN, id="scheme-and-space"),
            pytest.param("Bearer    ", NO_TOKEN, id="scheme-and-spaces"),
            pytest.param("Basic abc", WRONG_SCHEME, id="basic"),
            pytest.param("Token abc", WRONG_SCHEME, id="token"),
            pytest.param("DPoP abc", WRONG_SCHEME, id="dpop"),
            pytest.param("Bearerabc", WRONG_SCHEME, id="no-space"),
            pytest.param("Bearer\tabc", WRONG_SCHEME, id="tab-separator"),
            pytest.param("abc", WRONG_SCHEME, id="bare-token"),
            pytest.param("Bearer a b", NOT_ONE_TOKEN, id="two-words"),
            pytest.param("Bearer a,Bearer b", NOT_ONE_TOKEN, id="two-credentials"),
            pytest.param("Bearer a, Bearer b", NOT_ONE_TOKEN, id="two-credentials-spaced"),
            pytest.param("Bearer =abc", NOT_ONE_TOKEN, id="leading-padding"),
            pytest.param("Bearer ab=c", NOT_ONE_TOKEN, id="padding-inside"),
            pytest.param("Bearer abc;", NOT_ONE_TOKEN, id="semicolon"),
            pytest.param('Bearer "abc"', NOT_ONE_TOKEN, id="quoted"),
            pytest.param("Bearer token=abc", NOT_ONE_TOKEN, id="auth-param"),
            pytest.param("Bearer ab\u00e9", NOT_ONE_TOKEN, id="non-ascii"),
        ],
    )
    def test_invalid_request(self, header: str, description: str) -> None:
        with pytest.raises(InvalidRequest) as caught:
            extract_bearer_token(header)
        assert caught.value.description == description
        assert str(caught.value) == description
        assert caught.value.status_code == 400
        assert caught.value.error == "invalid_request"
