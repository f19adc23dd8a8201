"""Who is calling: the verified token's subject, client and grants, for tools to read.

The same object reaches tools through the SDK's own auth context
(``mcp.server.auth.middleware.auth_context.get_access_token``), so
:func:`current_principal` works in sync and async tools, in both protocol eras.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import replace
from typing import Any

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken

from app.auth.dpop import confirmed_key

DEFAULT_SCOPE_CLAIMS = ("scope", "scp", "permissions")


def _scopes_from_claims(claims: Mapping[str, Any], names: tuple[str, ...] = DEFAULT_SCOPE_CLAIMS) -> tuple[str, ...]:
    """Every scope the token grants, from each of these claims (a space-separated string or a list).

    RFC 9068 says ``scope``; Entra and Okta put them in ``scp``, Auth0's RBAC in ``permissions``.
    """
    scopes: list[str] = []
    for name in names:
        value = claims.get(name)
        if isinstance(value, str):
            scopes += value.split()
        elif isinstance(value, list):
            scopes += [v for v in value if isinstance(v, str)]
    return tuple(dict.fromkeys(scopes))


def _string_claim(claims: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value
    return None


@dataclass(frozen=True)
class Principal:
    """The caller as the verified access token describes it."""

    sub: str
    issuer: str
    client_id: str | None
    scopes: tuple[str, ...]
    org_id: str | None
    expires_at: int | None
    claims: Mapping[str, Any]
    #: RFC 9449 section 6.1: the thumbprint of the DPoP key the token is bound to (``cnf.jkt``), if any.
    jkt: str | None = None

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any], scope_claims: tuple[str, ...] = DEFAULT_SCOPE_CLAIMS) -> Principal:
        exp = claims.get("exp")
        return cls(
            sub=str(claims["sub"]),
            issuer=str(claims["iss"]),
            # RFC 9068 names it client_id; OIDC-style providers use azp, Entra v1 appid, Okta cid.
            client_id=_string_claim(claims, "client_id", "azp", "appid", "cid"),
            scopes=_scopes_from_claims(claims, scope_claims),
            org_id=_string_claim(claims, "org_id", "organization_id"),
            expires_at=int(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None,
            claims=dict(claims),
            jkt=confirmed_key(claims) if "cnf" in claims else None,
        )

    @property
    def key(self) -> tuple[str, str]:
        """Identifies a user across tokens: ``sub`` is unique only per issuer."""
        return (self.issuer, self.sub)

    def public_view(self) -> dict[str, Any]:
        return {
            "sub": self.sub,
            "client_id": self.client_id,
            "scopes": list(self.scopes),
            "issuer": self.issuer,
            "org_id": self.org_id,
            "expires_at": self.expires_at,
        }

    def to_access_token(self, token: str, resource: str) -> AccessToken:
        """The SDK's view of this caller, which binds sessions and request state to it.

        The raw token is not handed to tool code (MCP security best practices:
        no token passthrough); ``token`` carries its SHA-256 fingerprint instead.
        """
        return AccessToken(
            token="sha256:" + hashlib.sha256(token.encode()).hexdigest(),
            client_id=self.client_id or "",
            scopes=list(self.scopes),
            expires_at=self.expires_at,
            resource=resource,
            subject=self.sub,
            claims=dict(self.claims),
        )


class NoAuthenticatedCaller(RuntimeError):
    """A tool asked for the caller outside an authenticated request."""


def current_principal() -> Principal:
    """The authenticated caller of the current MCP request."""
    access_token = get_access_token()
    if access_token is None or not access_token.claims:
        raise NoAuthenticatedCaller("no authenticated caller in this context")
    principal = Principal.from_claims(access_token.claims)
    # The scopes and client as the verifier mapped them (MCP_SCOPE_CLAIMS may name other claims).
    return replace(principal, scopes=tuple(access_token.scopes), client_id=access_token.client_id or None)
