"""The verified caller, handed to the SDK the way its own auth middleware would.

The SDK reads the caller from two places: ``scope["user"]`` (an
``AuthenticatedUser``, which binds handshake-era sessions to their creator)
and the ``auth_context_var`` contextvar (``get_access_token()`` inside tools,
and the principal that sealed ``requestState`` is bound to). The handler task
runs in a fresh context holding only that variable, so nothing of the Flask
request context leaks into tool code.
"""

from __future__ import annotations

import contextvars

from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken


def authenticated_user(access_token: AccessToken) -> AuthenticatedUser:
    return AuthenticatedUser(access_token)


def handler_context(user: AuthenticatedUser | None) -> contextvars.Context:
    """A context for the SDK handler task in which ``get_access_token()`` returns the caller."""
    context = contextvars.Context()
    if user is not None:
        context.run(auth_context_var.set, user)
    return context
