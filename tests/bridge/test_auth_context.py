"""app.bridge.auth_context: the caller as the SDK's own auth middleware would hand it over."""

from __future__ import annotations

import contextvars

from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken

from app.bridge.auth_context import authenticated_user
from app.bridge.auth_context import handler_context

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
