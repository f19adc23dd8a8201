"""The records the authorization server keeps, shaped as Authlib's model mixins expect.

https://docs.authlib.org/en/latest/oauth2/specs/rfc6749.html

Secrets (client secrets, authorization codes, refresh tokens) are kept only
as SHA-256 digests: a copy of the database issues nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import AuthorizationCodeMixin
from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6749 import TokenMixin

from app.dev_issuer.redirects import redirect_uri_matches


def digest(secret: str) -> str:
    """How a secret is stored and looked up."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class User:
    """The person who consented: development login, a name and no password."""

    name: str

    def get_user_id(self) -> str:
        return self.name


@dataclass(frozen=True)
class Client(ClientMixin):
    """A registered client (RFC 7591), or one described by its client ID metadata document."""

    client_id: str
    metadata: Mapping[str, Any]
    secret_hash: str | None = None
    issued_at: int = 0
    from_metadata_document: bool = False

    @property
    def redirect_uris(self) -> list[str]:
        return list(self.metadata.get("redirect_uris") or [])

    @property
    def grant_types(self) -> list[str]:
        return list(self.metadata.get("grant_types") or ["authorization_code"])

    @property
    def response_types(self) -> list[str]:
        return list(self.metadata.get("response_types") or ["code"])

    @property
    def token_endpoint_auth_method(self) -> str:
        return str(self.metadata.get("token_endpoint_auth_method") or "client_secret_basic")

    @property
    def name(self) -> str:
        """What the consent page calls the client: its own name, else its identifier."""
        name = self.metadata.get("client_name")
        return name.strip() if isinstance(name, str) and name.strip() else self.client_id

    @property
    def document_host(self) -> str | None:
        """For a metadata-document client, the host that vouches for it."""
        return urlsplit(self.client_id).netloc if self.from_metadata_document else None

    def get_client_id(self) -> str:
        return self.client_id

    # None (authlib's stub says str) makes authlib require the redirect_uri parameter.
    def get_default_redirect_uri(self) -> str | None:  # type: ignore[override]  # None: redirect_uri required
        # OAuth 2.1 section 4.1.1: redirect_uri may be omitted only when exactly one is registered.
        uris = self.redirect_uris
        return uris[0] if len(uris) == 1 else None

    # authlib passes the request's scope string, or None when it has none (its stub says a collection).
    def get_allowed_scope(self, scope: str | None) -> str:  # type: ignore[override]  # authlib passes a str or None
        """The requested scopes (already checked against the server's list), else the registered ones."""
        if not scope:
            scope = str(self.metadata.get("scope") or "")
        return " ".join(dict.fromkeys(scope.split()))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return any(redirect_uri_matches(registered, redirect_uri) for registered in self.redirect_uris)

    def check_client_secret(self, client_secret: str) -> bool:
        return self.secret_hash is not None and hmac.compare_digest(self.secret_hash, digest(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        # RFC 7009 section 2.1: a client authenticates at the revocation endpoint as at the token endpoint.
        if endpoint in ("token", "revocation"):
            return method == self.token_endpoint_auth_method
        return True

    def check_response_type(self, response_type: str) -> bool:
        return response_type in self.response_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


@dataclass(frozen=True)
class AuthorizationCode(AuthorizationCodeMixin):
    """One authorization code; kept after use (marked used) so a second use can be recognised."""

    code_hash: str
    client_id: str
    subject: str
    scope: str
    redirect_uri: str | None
    resource: str
    code_challenge: str
    code_challenge_method: str
    expires_at: int
    used_at: int | None = None

    @property
    def family(self) -> str:
        """Every refresh token issued from this code, and from their rotations, shares this."""
        return self.code_hash

    # None (authlib's stub says str) when the authorization request named no redirect_uri.
    def get_redirect_uri(self) -> str | None:  # type: ignore[override]  # None: none was named
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= self.expires_at


@dataclass(frozen=True)
class RefreshToken(TokenMixin):
    """One refresh token; rotation marks it used, and a reuse revokes its whole family."""

    token_hash: str
    family: str
    client_id: str
    subject: str
    scope: str
    resource: str
    expires_at: int
    used_at: int | None = None
    revoked_at: int | None = None
    issued_at: int = field(default=0, compare=False)
    #: RFC 9449 section 5: a public client's refresh token is bound to its DPoP key (this thumbprint).
    jkt: str | None = None

    def check_client(self, client: ClientMixin) -> bool:
        return bool(client.get_client_id() == self.client_id)

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return max(0, self.expires_at - int(time.time()))

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return self.revoked_at is not None
