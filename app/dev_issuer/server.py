"""The development authorization server: Authlib's Flask ``AuthorizationServer`` with this server's parts.

https://docs.authlib.org/en/latest/flask/2/authorization-server.html

Built once per app. It knows the storage, resolves client_ids (registered, or
URLs naming a client metadata document), saves refresh tokens by family, adds
RFC 9207 ``iss`` to every authorization response, success or error, and
registers the grants and the registration endpoint.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749 import UnsupportedResponseTypeError
from authlib.oauth2.rfc9207 import IssuerParameter

from app.dev_issuer.client_metadata import ClientMetadataDocuments
from app.dev_issuer.client_metadata import is_metadata_document_url
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
from app.dev_issuer.registration import RegistrationEndpoint
from app.dev_issuer.scopes import ScopeCatalogue
from app.dev_issuer.signing import DevIssuer
from app.dev_issuer.storage import Storage
from app.dev_issuer.tokens import AccessTokenGenerator

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
        storage: Storage,
        scopes: ScopeCatalogue,
        *,
        token_lifetime: int,
        documents: ClientMetadataDocuments | None = None,
    ) -> None:
        super().__init__()
        self.storage = storage
        self.documents = documents or ClientMetadataDocuments(storage)
        self.catalogue = scopes
        self.scopes_supported = list(scopes.supported)
        self.resource_url = issuer.resource_url
        self.resource = ResourceIndicator(issuer.resource_url)
        self.issuer_parameter = Issuer(issuer.issuer)
        self.metadata = metadata_document(issuer.issuer, scopes.supported)

        self.register_token_generator("default", AccessTokenGenerator(issuer, lifetime=token_lifetime))
        self.register_grant(AuthorizationCodeGrant, [S256CodeChallenge(required=True), self.resource])
        self.register_grant(RefreshTokenGrant)
        self.register_grant(ClientCredentialsGrant)
        self.register_extension(self.issuer_parameter)
        self.register_endpoint(RegistrationEndpoint(self, self.metadata))

    def get_authorization_grant(self, request: OAuth2Request) -> Any:
        try:
            return super().get_authorization_grant(request)
        except UnsupportedResponseTypeError as error:
            # Authlib 1.9.9 passes its arguments in the wrong order and answers error_description="token".
            response_type = request.payload.response_type
            error.description = safe_description(f"response_type={response_type} is not supported")
            raise

    def query_client(self, client_id: str) -> Client | None:
        if is_metadata_document_url(client_id):
            return self.documents.client(client_id)
        return self.storage.client(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        client: Client = request.client
        subject = request.user.get_user_id() if request.user is not None else client.client_id
        refresh_token = token.get("refresh_token")
        if refresh_token:
            parent = request.refresh_token or request.authorization_code
            now = int(time.time())
            self.storage.add_refresh_token(
                RefreshToken(
                    token_hash=digest(refresh_token),
                    family=parent.family,
                    client_id=client.client_id,
                    subject=subject,
                    scope=token.get("scope", ""),
                    resource=self.resource_url,
                    expires_at=now + REFRESH_TOKEN_LIFETIME,
                    issued_at=now,
                )
            )
        logger.info(
            "issued an access token%s for %s: client_id=%r sub=%r scope=%r",
            " and a refresh token" if refresh_token else "",
            request.payload.grant_type,
            client.client_id,
            subject,
            token.get("scope", ""),
        )
