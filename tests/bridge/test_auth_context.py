"""app.bridge.auth_context: the caller as the SDK's own auth middleware would hand it over, and read back."""

from __future__ import annotations

import contextvars
import hashlib
from typing import Any

import pytest
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken

from app.auth.principal import Principal
from app.bridge.auth_context import NoAuthenticatedCaller
from app.bridge.auth_context import SDKUsers
from app.bridge.auth_context import access_token
from app.bridge.auth_context import authenticated_user
from app.bridge.auth_context import current_principal
from app.bridge.auth_context import handler_context

RAW_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
RESOURCE = "https://mcp.example.com/mcp"
TOKEN = AccessToken(token="opaque-value", client_id="client-1", scopes=["todo:read", "todo:write"], expires_at=None)


def test_authenticated_user_is_the_sdk_user_of_the_token() -> None:
    user = authenticated_user(TOKEN)
    assert isinstance(user, AuthenticatedUser)
    assert (user.access_token, user.username, user.scopes) == (TOKEN, "client-1", ["todo:read", "todo:write"])


def test_the_handler_context_gives_tools_the_caller() -> None:
    user = authenticated_user(TOKEN)
    context = handler_context(user)
    assert context.run(get_access_token) == TOKEN
    assert context.run(auth_context_var.get) is user


def test_the_handler_context_holds_nothing_of_the_caller_s_context() -> None:
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")
    marker.set("flask request")
    context = handler_context(authenticated_user(TOKEN))
    assert context.run(marker.get) == "unset"
    assert list(context) == [auth_context_var]
    # Setting the caller there leaves the calling context as it was.
    assert get_access_token() is None


def test_without_a_caller_the_context_is_empty() -> None:
    context = handler_context(None)
    assert list(context) == []
    assert context.run(get_access_token) is None


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": "https://login.example.com", "sub": "alice", "aud": RESOURCE, "exp": 1_800_000_600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


class TestSDKUsers:
    def test_one_user_per_verified_principal(self) -> None:
        users = SDKUsers(RESOURCE)
        principal = Principal.from_claims(claims(client_id="cli"))
        user = users.user(principal, RAW_TOKEN)
        assert user.access_token == access_token(principal, RAW_TOKEN, RESOURCE)
        assert users.user(principal, RAW_TOKEN) is user
        # An equal principal from another verification is another token's caller: built anew.
        assert users.user(Principal.from_claims(claims(client_id="cli")), RAW_TOKEN) is not user


class TestAccessToken:
    def test_fingerprint_instead_of_the_raw_token(self) -> None:
        source = claims(client_id="cli", scope="todo:read")
        token = access_token(Principal.from_claims(source), RAW_TOKEN, RESOURCE)
        assert token == AccessToken(
            token="sha256:" + hashlib.sha256(RAW_TOKEN.encode()).hexdigest(),
            client_id="cli",
            scopes=["todo:read"],
            expires_at=1_800_000_600,
            resource="https://mcp.example.com/mcp",
            subject="alice",
            claims=source,
        )
        assert RAW_TOKEN not in token.model_dump_json()

    def test_no_client_id_becomes_an_empty_string(self) -> None:
        token = access_token(Principal.from_claims(claims()), RAW_TOKEN, RESOURCE)
        assert token.client_id == ""


class TestCurrentPrincipal:
    def test_outside_a_request(self) -> None:
        with pytest.raises(NoAuthenticatedCaller, match=r"^no authenticated caller in this context$"):
            current_principal()

    def test_inside_the_handler_context(self) -> None:
        principal = Principal.from_claims(claims(client_id="cli", scope="todo:read"))
        user = authenticated_user(access_token(principal, RAW_TOKEN, RESOURCE))
        assert handler_context(user).run(current_principal) == principal

    def test_handler_context_without_a_user(self) -> None:
        with pytest.raises(NoAuthenticatedCaller, match=r"^no authenticated caller in this context$"):
            handler_context(None).run(current_principal)

    def test_access_token_without_claims(self) -> None:
        user = authenticated_user(AccessToken(token="t", client_id="c", scopes=[]))
        with pytest.raises(NoAuthenticatedCaller, match=r"^no authenticated caller in this context$"):
            handler_context(user).run(current_principal)
