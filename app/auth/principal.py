"""Who is calling: the verified token's subject, client and grants, for tools to read.

Plain data, with nothing of the SDK: the bridge hands it to the SDK's own auth
context, and :func:`app.bridge.auth_context.current_principal` reads it back in
sync and async tools, in both protocol eras.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
