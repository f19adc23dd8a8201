"""The verified caller, handed to the SDK the way its own auth middleware would, and read back in tools.

The SDK reads the caller from two places: ``scope["user"]`` (an
``AuthenticatedUser``, which binds handshake-era sessions to their creator)
and the ``auth_context_var`` contextvar (``get_access_token()`` inside tools,
and the principal that sealed ``requestState`` is bound to). The handler task
runs in a fresh context holding only that variable, so nothing of the Flask
request context leaks into tool code.

The dependency points this way only: :mod:`app.auth` verifies the token and
leaves a :class:`~app.auth.principal.Principal` on ``flask.g``; this module,
part of the bridge, turns it into the SDK's types. So the authentication hook
loads none of the SDK's transport.
"""

from __future__ import annotations

import contextvars
import hashlib
from dataclasses import replace

from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken

from app.auth.principal import Principal

SDK_USER_CACHE_SIZE = 4096


class NoAuthenticatedCaller(RuntimeError):
    """A tool asked for the caller outside an authenticated request."""


def access_token(principal: Principal, token: str, resource: str) -> AccessToken:
    """The SDK's view of this caller, which binds sessions and request state to it.

    The raw token is not handed to tool code (MCP security best practices:
    no token passthrough); ``token`` carries its SHA-256 fingerprint instead.
    """
    return AccessToken(
        token="sha256:" + hashlib.sha256(token.encode()).hexdigest(),
        client_id=principal.client_id or "",
        scopes=list(principal.scopes),
        expires_at=principal.expires_at,
        resource=resource,
        subject=principal.sub,
        claims=dict(principal.claims),
    )


def authenticated_user(token: AccessToken) -> AuthenticatedUser:
    return AuthenticatedUser(token)


class SDKUsers:
    """The SDK's view of each caller, built once per verified token (the verifier caches the principal)."""

    def __init__(self, resource_url: str) -> None:
        self.resource_url = resource_url
        self._users: dict[int, tuple[Principal, AuthenticatedUser]] = {}

    def user(self, principal: Principal, token: str) -> AuthenticatedUser:
        cached = self._users.get(id(principal))
        if cached is not None and cached[0] is principal:
            return cached[1]
        user = authenticated_user(access_token(principal, token, self.resource_url))
        if len(self._users) >= SDK_USER_CACHE_SIZE:
            self._users.clear()
        # The principal is kept alive with its entry, so its id cannot be reused while the entry exists.
        self._users[id(principal)] = (principal, user)
        return user


def handler_context(user: AuthenticatedUser | None) -> contextvars.Context:
    """A context for the SDK handler task in which ``get_access_token()`` returns the caller."""
    context = contextvars.Context()
    if user is not None:
        context.run(auth_context_var.set, user)
    return context


def current_principal() -> Principal:
    """The authenticated caller of the current MCP request (inside a tool, resource or prompt)."""
    token = get_access_token()
    if token is None or not token.claims:
        raise NoAuthenticatedCaller("no authenticated caller in this context")
    principal = Principal.from_claims(token.claims)
    # The scopes and client as the verifier mapped them (MCP_SCOPE_CLAIMS may name other claims).
    return replace(principal, scopes=tuple(token.scopes), client_id=token.client_id or None)
