"""Properties that must hold for every input, not just the ones we thought of (hypothesis)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from app.auth.bearer import extract_bearer_token
from app.auth.challenges import InvalidRequest
from app.auth.jwt_access_token import normalize_audience
from app.auth.scopes import ScopePolicy

TOKEN_CHARS = string.ascii_letters + string.digits + "-._~+/"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=200).map(lambda t: t) | st.builds(
    lambda body, pad: body + "=" * pad, st.text(TOKEN_CHARS, min_size=1, max_size=50), st.integers(0, 2)
)
scope_names = st.text(string.ascii_lowercase + ":_.", min_size=1, max_size=12)


class TestAuthorizationHeader:
    @given(st.text(max_size=300))
    def test_any_header_is_a_token_nothing_or_invalid_request(self, header: str) -> None:
        try:
            token = extract_bearer_token(header)
        except InvalidRequest as error:
            assert error.status_code == 400
            return
        assert token is None or token in header
        if token is not None:
            assert " " not in token and "," not in token

    @given(tokens, st.sampled_from(["Bearer", "bearer", "BEARER", "bEaReR"]), st.integers(1, 5))
    def test_every_well_formed_bearer_header_yields_its_token(self, token: str, scheme: str, spaces: int) -> None:
        assert extract_bearer_token(f"{scheme}{' ' * spaces}{token}") == token

    @given(tokens, tokens)
    def test_two_tokens_are_refused(self, first: str, second: str) -> None:
        for header in (f"Bearer {first} {second}", f"Bearer {first}, Bearer {second}"):
            with pytest.raises(InvalidRequest):
                extract_bearer_token(header)

    @given(st.text(string.ascii_letters, min_size=1, max_size=10).filter(lambda s: s.lower() != "bearer"), tokens)
    def test_other_schemes_are_refused(self, scheme: str, token: str) -> None:
        with pytest.raises(InvalidRequest):
            extract_bearer_token(f"{scheme} {token}")


hierarchies = st.dictionaries(scope_names, st.frozensets(scope_names, max_size=4), max_size=6)


class TestScopeHierarchy:
    @given(hierarchies, st.frozensets(scope_names, max_size=6), st.frozensets(scope_names, max_size=6))
    @settings(max_examples=300)
    def test_missing_is_what_the_expanded_grant_lacks(
        self, hierarchy: dict[str, frozenset[str]], granted: frozenset[str], required: frozenset[str]
    ) -> None:
        policy = ScopePolicy(hierarchy)
        expanded = policy.expand(granted)
        missing = policy.missing(granted, required)
        assert missing <= required
        assert missing == required - expanded
        assert granted <= expanded
        assert policy.expand(expanded) == expanded  # idempotent, cycles included
        assert policy.missing(granted | required, required) == frozenset()

    @given(hierarchies, st.frozensets(scope_names, max_size=6), st.frozensets(scope_names, max_size=6))
    def test_more_grants_never_need_more(
        self, hierarchy: dict[str, frozenset[str]], granted: frozenset[str], extra: frozenset[str]
    ) -> None:
        policy = ScopePolicy(hierarchy)
        required = frozenset(hierarchy) | extra
        assert policy.missing(granted | extra, required) <= policy.missing(granted, required)

    @given(scope_names, scope_names, scope_names)
    def test_implication_is_transitive(self, a: str, b: str, c: str) -> None:
        policy = ScopePolicy({a: {b}, b: {c}})
        assert {a, b, c} <= policy.expand({a})


hosts = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5}){1,2}", fullmatch=True)
paths = st.from_regex(r"(/[A-Za-z0-9_-]{1,8}){0,3}", fullmatch=True)


def vary_case(text: str, pattern: list[bool]) -> str:
    return "".join(c.upper() if (pattern[i % len(pattern)] if pattern else False) else c for i, c in enumerate(text))


class TestAudienceNormalisation:
    @given(st.sampled_from(["http", "https"]), hosts, paths, st.lists(st.booleans(), min_size=1, max_size=8))
    def test_scheme_and_host_case_do_not_matter_but_the_path_does(
        self, scheme: str, host: str, path: str, pattern: list[bool]
    ) -> None:
        url = f"{scheme}://{host}{path}"
        shouted = f"{vary_case(scheme, pattern)}://{vary_case(host, pattern)}{path}"
        assert normalize_audience(shouted) == normalize_audience(url)
        assert normalize_audience(url + "/") == normalize_audience(url)
        if path and path != path.upper():
            assert normalize_audience(f"{scheme}://{host}{path.upper()}") != normalize_audience(url)

    @given(st.text(max_size=80))
    def test_idempotent_for_anything(self, value: str) -> None:
        once = normalize_audience(value)
        assert normalize_audience(once) == once or once.endswith("/")
