"""The development authorization server: Authlib's Flask ``AuthorizationServer`` with this server's parts.

https://docs.authlib.org/en/latest/flask/2/authorization-server.html

Built once per app. It knows the storage, resolves client_ids (registered, or
URLs naming a client metadata document), records access tokens and saves
refresh tokens by grant family (so a replay or RFC 7009 revokes them), adds
RFC 9207 ``iss`` to every authorization response, success or error, checks
RFC 9449 DPoP proofs of token requests, and registers the grants and the
registration and revocation endpoints.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from typing import cast

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749 import UnsupportedResponseTypeError
from authlib.oauth2.rfc9207 import IssuerParameter
from werkzeug.datastructures import Headers

from app.auth.dpop import NonceRequired
from app.auth.dpop import ProofError
from app.auth.dpop import ProofVerifier
from app.auth.dpop import normalize_htu
from app.dev_issuer.client_metadata import ClientMetadataDocuments
from app.dev_issuer.client_metadata import is_metadata_document_url
from app.dev_issuer.errors import InvalidDPoPProofError
from app.dev_issuer.errors import UseDPoPNonceError
from app.dev_issuer.errors import safe_description
from app.dev_issuer.grants import REFRESH_TOKEN_LIFETIME
from app.dev_issuer.grants import AuthorizationCodeGrant
from app.dev_issuer.grants import ClientCredentialsGrant
from app.dev_issuer.grants import RefreshTokenGrant
from app.dev_issuer.grants import ResourceIndicator
from app.dev_issuer.grants import S256CodeChallenge
from app.dev_issuer.metadata import metadata_document
from app.dev_issuer.models import Client
from app.dev_issuer.models import RefreshToken
from app.dev_issuer.models import digest
from app.dev_issuer.registration import PUBLIC_CLIENT
from app.dev_issuer.registration import RegistrationEndpoint
from app.dev_issuer.revocation import RevokedAccessTokens
from app.dev_issuer.revocation import TokenRevocationEndpoint
from app.dev_issuer.scopes import ScopeCatalogue
from app.dev_issuer.signing import DevIssuer
from app.dev_issuer.tokens import AccessTokenGenerator
from app.dev_issuer.tokens import unverified_claims
from app.settings import Settings

logger = logging.getLogger(__name__)


class Issuer(IssuerParameter):
    """RFC 9207: ``iss`` on every authorization response, errors included (section 2)."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer

    def get_issuer(self) -> str:
        return self.issuer


class DevAuthorizationServer(AuthorizationServer):
    def __init__(
        self,
        issuer: DevIssuer,
        settings: Settings,
        scopes: ScopeCatalogue,
        revoked: RevokedAccessTokens,
        proofs: ProofVerifier | None = None,
    ) -> None:
        """``revoked``: the revoked access tokens the resource server refuses; their storage keeps the rest
        of this server's state (clients, codes, refresh tokens). ``proofs`` checks DPoP proofs (None: DPoP
        is off and a proof is ignored, RFC 9449 section 5); with MCP_DPOP=required a token request without
        a proof is refused."""
        super().__init__()
        self.storage = revoked.storage
        self.revoked = revoked
        self.documents = ClientMetadataDocuments(self.storage)
        self.catalogue = scopes
        self.scopes_supported = list(scopes.supported)
        self.resource_url = issuer.resource_url
        self.resource = ResourceIndicator(issuer.resource_url)
        self.issuer_parameter = Issuer(issuer.issuer)
        self.metadata = metadata_document(
            issuer.issuer, scopes.supported, dpop_algorithms=proofs.algorithms if proofs is not None else ()
        )
        self.proofs = proofs
        self.dpop_required = settings.dpop == "required" and proofs is not None
        # The htu of token requests' proofs: the token endpoint as the metadata names it, from settings.
        token_url = normalize_htu(self.metadata["token_endpoint"])
        assert token_url is not None
        self.token_url = token_url

        self.register_token_generator("default", AccessTokenGenerator(issuer, lifetime=settings.dev_token_lifetime))
        self.register_grant(AuthorizationCodeGrant, [S256CodeChallenge(required=True), self.resource])
        self.register_grant(RefreshTokenGrant)
        self.register_grant(ClientCredentialsGrant)
        self.register_extension(self.issuer_parameter)
        # authlib takes any endpoint with an ENDPOINT_NAME; its stub names only RFC 6749's Endpoint class.
        self.register_endpoint(RegistrationEndpoint(self, self.metadata))  # type: ignore[arg-type]  # has ENDPOINT_NAME
        self.register_endpoint(TokenRevocationEndpoint(self, issuer, self.revoked))

    def revoke_family(self, family: str) -> int:
        """Revoke a grant: its refresh tokens and its access tokens, refused at the MCP endpoint from now on."""
        revoked = self.storage.revoke_family(family, int(time.time()))
        self.revoked.sync()
        return revoked

    def get_authorization_grant(self, request: OAuth2Request) -> Any:
        try:
            return super().get_authorization_grant(request)
        except UnsupportedResponseTypeError as error:
            # Authlib 1.9.9 passes its arguments in the wrong order and answers error_description="token".
            response_type = request.payload.response_type if request.payload is not None else None
            error.description = safe_description(f"response_type={response_type} is not supported")
            raise

    def dpop_proof(self, request: OAuth2Request) -> str | None:
        """RFC 9449 section 5: the thumbprint of the key a token request's proof was made with, if any."""
        # The Flask integration's requests carry Werkzeug's headers; authlib's stub says a plain mapping.
        values = cast(Headers, request.headers).getlist("DPoP") if self.proofs is not None else []
        if not values:
            if self.dpop_required:
                raise InvalidDPoPProofError("This authorization server issues DPoP-bound tokens only: send a proof")
            return None
        assert self.proofs is not None
        try:
            return self.proofs.verify(values, method=request.method, url=self.token_url).jkt
        except NonceRequired as error:
            raise UseDPoPNonceError(str(error), error.nonce) from None
        except ProofError as error:
            raise InvalidDPoPProofError(str(error)) from None

    # None (authlib's stub says a client) makes authlib answer invalid_client.
    def query_client(self, client_id: str) -> Client | None:  # type: ignore[override]  # None: invalid_client
        if is_metadata_document_url(client_id):
            return self.documents.client(client_id)
        return self.storage.client(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        client = cast(Client, request.client)  # what query_client returned, which authlib's stub cannot know
        subject = request.user.get_user_id() if request.user is not None else client.client_id
        refresh_token = token.get("refresh_token")
        jkt: str | None = getattr(request, "dpop_jkt", None)
        parent = request.refresh_token or request.authorization_code
        now = int(time.time())
        # Recorded by its jti and grant family, so that a replay of the code or refresh token (or RFC 7009)
        # can revoke it; client credentials tokens have no family.
        claims = unverified_claims(token["access_token"])
        self.storage.add_access_token(
            str(claims["jti"]),
            parent.family if parent is not None else None,
            client.client_id,
            int(claims["exp"]),
            now,
        )
        if refresh_token:
            assert parent is not None  # only the code and refresh token grants issue refresh tokens
            # RFC 9449 section 5: refresh tokens of public clients are bound to the DPoP key;
            # confidential clients' are already bound to their credentials.
            public = client.token_endpoint_auth_method == PUBLIC_CLIENT
            self.storage.add(
                RefreshToken(
                    token_hash=digest(refresh_token),
                    family=parent.family,
                    client_id=client.client_id,
                    subject=subject,
                    scope=token.get("scope", ""),
                    resource=self.resource_url,
                    expires_at=now + REFRESH_TOKEN_LIFETIME,
                    issued_at=now,
                    jkt=jkt if public else None,
                ),
                now,
            )
        logger.info(
            "issued a%s access token%s for %s: client_id=%r sub=%r scope=%r",
            " DPoP-bound" if jkt is not None else "n",
            " and a refresh token" if refresh_token else "",
            request.payload.grant_type if request.payload is not None else None,
            client.client_id,
            subject,
            token.get("scope", ""),
        )
