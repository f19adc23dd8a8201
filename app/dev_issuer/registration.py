"""RFC 7591 dynamic client registration, open to any client (this is a development server).

https://www.rfc-editor.org/rfc/rfc7591#section-3

Authlib's endpoint validates the metadata against the server's metadata
(grant types, response types, auth methods, scopes); this subclass adds the
rules of this server and fixes one interoperability trap: Authlib answers
``"client_secret": null`` for a public client, and the TypeScript SDK's client
(with everything built on it) rejects a JSON null there, so the member is left
out. Public clients (``token_endpoint_auth_method: none``) get no secret and
may not use client_credentials; redirect URIs follow :mod:`.redirects`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any

from authlib.consts import default_json_headers
from authlib.oauth2.rfc7591 import ClientMetadataClaims
from authlib.oauth2.rfc7591 import ClientRegistrationEndpoint
from authlib.oauth2.rfc7591 import InvalidClientMetadataError
from authlib.oauth2.rfc7591 import InvalidRedirectURIError

from app.dev_issuer.errors import safe_description
from app.dev_issuer.models import Client
from app.dev_issuer.models import digest
from app.dev_issuer.redirects import redirect_uri_problem

if TYPE_CHECKING:
    from app.dev_issuer.server import DevAuthorizationServer

logger = logging.getLogger(__name__)

MAX_CLIENT_NAME = 200
REDIRECTING_GRANTS = frozenset({"authorization_code"})
PUBLIC_CLIENT = "none"  # the token_endpoint_auth_method of a client without a secret
_LIST_MEMBERS = ("redirect_uris", "grant_types", "response_types", "contacts")
_STRING_MEMBERS = (
    "token_endpoint_auth_method",
    "client_name",
    "scope",
    "application_type",
    "client_uri",
    "logo_uri",
    "tos_uri",
    "policy_uri",
    "jwks_uri",
    "software_id",
    "software_version",
)


class ApplicationTypeClaims(ClientMetadataClaims):
    """OpenID Connect's ``application_type``, which MCP 2026-07-28 clients send when they register."""

    REGISTERED_CLAIMS = [*ClientMetadataClaims.REGISTERED_CLAIMS, "application_type"]

    def validate(self, now: Any = None, leeway: int = 0) -> None:
        super().validate(now, leeway)
        self.setdefault("application_type", "native")
        if self["application_type"] not in ("native", "web"):
            raise InvalidClientMetadataError("application_type must be native or web")


class RegistrationEndpoint(ClientRegistrationEndpoint):
    server: DevAuthorizationServer

    def __init__(self, server: DevAuthorizationServer, metadata: Mapping[str, Any]) -> None:
        super().__init__(server, claims_classes=[ApplicationTypeClaims])
        self._metadata = dict(metadata)

    def create_registration_response(self, request: Any) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        data = request.payload.data
        for name in [name for name, value in data.items() if value is None]:
            del data[name]  # a JSON null is an omitted member
        if not data:
            raise InvalidClientMetadataError("The client metadata is empty (RFC 7591 section 2)")
        self._check_types(data)
        # Before Authlib's claims, whose generic "Invalid claim" would hide which URI is wrong and why.
        for uri in data.get("redirect_uris") or []:
            problem = redirect_uri_problem(uri)
            if problem is not None:
                raise InvalidRedirectURIError(safe_description(problem))
        metadata = self.extract_client_metadata(request)
        self._check_policy(metadata)
        info = self.generate_client_info(request)
        public = metadata["token_endpoint_auth_method"] == PUBLIC_CLIENT
        if public:
            del info["client_secret"], info["client_secret_expires_at"]
        client = Client(
            client_id=info["client_id"],
            metadata=metadata,
            secret_hash=None if public else digest(info["client_secret"]),
            issued_at=info["client_id_issued_at"],
        )
        self.server.storage.add_client(client)
        logger.info(
            "registered client_id=%r (%r, %s, grants %s)",
            client.client_id,
            client.name,
            client.token_endpoint_auth_method,
            " ".join(client.grant_types),
        )
        return 201, {**metadata, **info}, default_json_headers

    def authenticate_token(self, request: Any) -> bool:
        return True  # open registration: anyone on this machine may register a client

    def get_server_metadata(self) -> dict[str, Any]:
        return self._metadata

    def save_client(self, client_info: Any, client_metadata: Any, request: Any) -> None:
        raise NotImplementedError("create_registration_response saves the client itself")

    @staticmethod
    def _check_types(data: Mapping[str, Any]) -> None:
        for name in _LIST_MEMBERS:
            value = data.get(name)
            if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise InvalidClientMetadataError(f"{name} must be an array of strings")
        for name in _STRING_MEMBERS:
            if name in data and not isinstance(data[name], str):
                raise InvalidClientMetadataError(f"{name} must be a string")
        if "jwks" in data and not isinstance(data["jwks"], dict):
            raise InvalidClientMetadataError("jwks must be a JSON object (a JWK Set)")
        if len(data.get("client_name") or "") > MAX_CLIENT_NAME:
            raise InvalidClientMetadataError(f"client_name must be at most {MAX_CLIENT_NAME} characters")

    @staticmethod
    def _check_policy(metadata: dict[str, Any]) -> None:
        grant_types = metadata.setdefault("grant_types", ["authorization_code"])
        if REDIRECTING_GRANTS & set(grant_types):
            metadata.setdefault("response_types", ["code"])
            if not metadata.get("redirect_uris"):
                raise InvalidRedirectURIError("redirect_uris are required for the authorization_code grant")
        if "client_credentials" in grant_types and metadata["token_endpoint_auth_method"] == PUBLIC_CLIENT:
            raise InvalidClientMetadataError("client_credentials needs a confidential client, not auth method none")
