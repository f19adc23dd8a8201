"""The grants: authorization code with PKCE (S256 only), refresh with rotation, client credentials.

https://www.rfc-editor.org/rfc/rfc7636
https://www.rfc-editor.org/rfc/rfc8707#section-2
https://datatracker.ietf.org/doc/html/draft-ietf-oauth-v2-1#section-4.1

Authlib's grants do the protocol; these subclasses add what OAuth 2.1 and MCP
require on top of Authlib 1.9.9's defaults:

* PKCE for every authorization request, S256 only: Authlib's ``CodeChallenge``
  lets a request without ``code_challenge`` through, and accepts ``plain``.
* RFC 8707 ``resource``: only MCP_RESOURCE_URL may be requested (absent means
  that one too); anything else is ``invalid_target``.
* Codes are single use and short-lived; a second redemption is refused and
  revokes what the first one produced, refresh and access tokens (RFC 6749
  section 4.1.2: the server "SHOULD revoke (when possible) all tokens
  previously issued based on that authorization code").
* Refresh tokens rotate: each is redeemed once, and a reused one is refused
  and revokes its whole family, access tokens included (OAuth 2.1 section
  4.3.1, RFC 9700 section 4.14.2). A revoked access token is refused at the
  MCP endpoint from then on (:mod:`.revocation`).
* RFC 9449 DPoP (:class:`TokenEndpointGrant`): a token request with a valid proof
  gets an access token bound to the proof's key, and a public client's refresh
  token is bound to it too; a bound refresh token is refused without a proof
  made with the same key. The proof is checked before a code or refresh token
  is spent, so a refused proof (or a nonce challenge) leaves it usable.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar
from typing import TypeVar
from typing import cast

from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6749 import InvalidGrantError
from authlib.oauth2.rfc6749 import InvalidRequestError
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749 import TokenMixin
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc7636 import CodeChallenge

from app.auth.jwt_access_token import normalize_audience
from app.dev_issuer.errors import InvalidDPoPProofError
from app.dev_issuer.errors import InvalidTargetError
from app.dev_issuer.models import AuthorizationCode
from app.dev_issuer.models import RefreshToken
from app.dev_issuer.models import User
from app.dev_issuer.models import digest
from app.dev_issuer.tokens import dpop_binding

if TYPE_CHECKING:
    from app.dev_issuer.server import DevAuthorizationServer

logger = logging.getLogger(__name__)

CODE_LIFETIME = 60
REFRESH_TOKEN_LIFETIME = 7 * 24 * 3600
R = TypeVar("R", AuthorizationCode, RefreshToken)


class S256CodeChallenge(CodeChallenge):
    """PKCE as OAuth 2.1 requires it: a ``code_challenge`` on every request, method S256 and nothing else."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge with code_challenge_method=S256")
        if data.get("code_challenge_method") != "S256":
            # RFC 7636 section 4.3: an absent method means plain, which is refused too.
            raise InvalidRequestError("code_challenge_method must be S256")
        super().validate_code_challenge(grant, redirect_uri)


class ResourceIndicator:
    """RFC 8707: the ``resource`` parameter, where this server accepts exactly its own MCP URL."""

    def __init__(self, resource_url: str) -> None:
        self.resource_url = resource_url
        self._normalized = normalize_audience(resource_url)

    def __call__(self, grant: Any) -> None:
        """As an extension of the authorization code grant: checked with the authorization request."""
        grant.register_hook("after_validate_authorization_request_payload", self.check_authorization_request)

    def requested(self, request: OAuth2Request) -> str:
        """The single resource the request names (absent: this server's), or ``invalid_target``."""
        assert request.payload is not None  # set when authlib made the request
        values = request.payload.datalist.get("resource", [])
        if len(values) > 1:
            raise InvalidTargetError(f"Only one resource can be requested: {self.resource_url}")
        if values and normalize_audience(values[0]) != self._normalized:
            raise InvalidTargetError(f"This authorization server only issues tokens for {self.resource_url}")
        return self.resource_url

    def check_authorization_request(self, grant: Any, redirect_uri: str) -> None:
        self.requested(grant.request)


class TokenEndpointGrant:
    """What every grant here checks at the token endpoint beyond Authlib's; mixed in before Authlib's grant class.

    The RFC 8707 resource, then the RFC 9449 section 5 proof: a valid one binds the
    access token to the proof's key. Both before a code or refresh token is spent.
    """

    server: DevAuthorizationServer
    request: OAuth2Request

    def validate_token_request(self) -> None:
        super().validate_token_request()  # type: ignore[misc]  # a mixin: the grant after it in the MRO has it
        self.server.resource.requested(self.request)
        # The thumbprint of the proof's key, None when the request carried no proof.
        self.request.dpop_jkt = self.server.dpop_proof(self.request)  # type: ignore[attr-defined]  # ours, on authlib's request

    def generate_token(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        binding = dpop_binding.set(getattr(self.request, "dpop_jkt", None))
        try:
            # A mixin: the grant class after it in the MRO has generate_token, which authlib leaves untyped.
            return super().generate_token(*args, **kwargs)  # type: ignore[misc,no-any-return]  # a mixin; untyped in authlib
        finally:
            dpop_binding.reset(binding)


class SingleUse:
    """A credential redeemed once (a code, a refresh token): presented again, it is refused and its grant revoked.

    RFC 6749 section 4.1.2 for codes, OAuth 2.1 section 4.3.1 and RFC 9700 section 4.14.2 for refresh tokens.
    """

    server: DevAuthorizationServer
    #: What the refusal and the log line call the credential.
    credential: ClassVar[str]

    def usable(self, record: R | None) -> R | None:
        """The stored record if it may be redeemed; a spent one is a replay."""
        if record is None:
            return None
        if record.used_at is not None:
            self.replayed(record)
            return None
        return None if record.is_expired() else record

    def claim(self, record: AuthorizationCode | RefreshToken) -> None:
        """Claimed before anything is issued: of two concurrent redemptions only one wins."""
        if not self.server.storage.claim(record, int(time.time())):
            self.replayed(record)
            raise InvalidGrantError(f"The {self.credential} was already used")

    def replayed(self, record: AuthorizationCode | RefreshToken) -> None:
        revoked = self.server.revoke_family(record.family)
        logger.warning(
            "%s presented again by client_id=%r sub=%r: refused, its grant revoked "
            "(its access tokens and %d refresh token(s))",
            self.credential,
            record.client_id,
            record.subject,
            revoked,
        )


class AuthorizationCodeGrant(SingleUse, TokenEndpointGrant, grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    credential = "authorization code"
    server: DevAuthorizationServer

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        assert request.payload is not None and request.client is not None and request.user is not None
        data = request.payload.data
        self.server.storage.add(
            AuthorizationCode(
                code_hash=digest(code),
                client_id=request.client.get_client_id(),
                subject=request.user.get_user_id(),
                scope=request.scope or "",
                redirect_uri=request.payload.redirect_uri,
                resource=self.server.resource_url,
                code_challenge=data["code_challenge"],
                code_challenge_method=data["code_challenge_method"],
                expires_at=int(time.time()) + CODE_LIFETIME,
            ),
            int(time.time()),
        )

    def query_authorization_code(self, code: str, client: ClientMixin) -> AuthorizationCode | None:
        record = self.server.storage.find(AuthorizationCode, digest(code))
        return self.usable(record if record is not None and record.client_id == client.get_client_id() else None)

    def create_token_response(self) -> tuple[int, Any, Any]:
        # What query_authorization_code returned, which authlib's stub cannot know.
        record = cast(AuthorizationCode, self.request.authorization_code)
        self.claim(record)
        return super().create_token_response()

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Nothing to delete: the code stays, marked used, so that a replay is recognised."""

    def authenticate_user(self, authorization_code: AuthorizationCode) -> User:
        return User(authorization_code.subject)


class RefreshTokenGrant(SingleUse, TokenEndpointGrant, grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    INCLUDE_NEW_REFRESH_TOKEN = True
    credential = "refresh token"
    server: DevAuthorizationServer

    # None (authlib's stub says a token) makes authlib answer invalid_grant.
    def authenticate_refresh_token(self, refresh_token: str) -> RefreshToken | None:  # type: ignore[override]  # None: invalid_grant
        record = self.server.storage.find(RefreshToken, digest(refresh_token))
        return self.usable(record if record is not None and not record.is_revoked() else None)

    def validate_token_request(self) -> None:
        super().validate_token_request()
        jkt: str | None = self.request.dpop_jkt  # type: ignore[attr-defined]  # set by validate_token_request
        # What authenticate_refresh_token returned, which authlib's stub cannot know.
        bound = cast(RefreshToken, self.request.refresh_token).jkt
        # RFC 9449 section 5: for a public client's bound refresh token, "the binding MUST be validated
        # when the refresh token is later presented to get new access tokens".
        if bound is not None and jkt is None:
            raise InvalidDPoPProofError("This refresh token is bound to a DPoP key: send a DPoP proof made with it")
        if bound is not None and jkt != bound:
            raise InvalidGrantError("The refresh token is bound to another DPoP key")

    def create_token_response(self) -> tuple[int, Any, Any]:
        record = cast(RefreshToken, self.request.refresh_token)
        self.claim(record)
        return super().create_token_response()

    def authenticate_user(self, refresh_token: RefreshToken) -> User:
        return User(refresh_token.subject)

    def revoke_old_credential(self, refresh_token: TokenMixin) -> None:
        """Already done: the token was claimed (marked spent) before the new one was issued."""


class ClientCredentialsGrant(TokenEndpointGrant, grants.ClientCredentialsGrant):
    """For confidential clients acting on their own behalf; the token's ``sub`` is the client_id."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
    server: DevAuthorizationServer
