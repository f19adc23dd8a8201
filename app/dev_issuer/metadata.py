"""RFC 8414 authorization server metadata for the development authorization server.

https://www.rfc-editor.org/rfc/rfc8414#section-2
https://www.rfc-editor.org/rfc/rfc9207#section-3

``issuer`` is exactly the URL clients build the well-known URL from (RFC 8414
section 3.3: a client MUST NOT use metadata whose issuer differs). The
document is validated with Authlib's model once, at start, and served as
prebuilt bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oauth2.rfc9207 import AuthorizationServerMetadata as IssuerParameterMetadata

from app.settings import DEV_ISSUER_PATH

AUTHORIZE_PATH = DEV_ISSUER_PATH + "/authorize"
TOKEN_PATH = DEV_ISSUER_PATH + "/token"
REGISTER_PATH = DEV_ISSUER_PATH + "/register"
REVOKE_PATH = DEV_ISSUER_PATH + "/revoke"
JWKS_PATH = DEV_ISSUER_PATH + "/jwks.json"

GRANT_TYPES = ["authorization_code", "refresh_token", "client_credentials"]
TOKEN_ENDPOINT_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post"]


def metadata_document(issuer: str, scopes: Sequence[str], *, dpop_algorithms: Sequence[str] = ()) -> dict[str, Any]:
    origin = issuer.removesuffix(DEV_ISSUER_PATH)
    document: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": origin + AUTHORIZE_PATH,
        "token_endpoint": origin + TOKEN_PATH,
        "registration_endpoint": origin + REGISTER_PATH,
        # RFC 8414 section 2 / RFC 7009: revocation, with the same client authentication as the token endpoint.
        "revocation_endpoint": origin + REVOKE_PATH,
        "revocation_endpoint_auth_methods_supported": TOKEN_ENDPOINT_AUTH_METHODS,
        "jwks_uri": origin + JWKS_PATH,
        "scopes_supported": list(scopes),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": GRANT_TYPES,
        "token_endpoint_auth_methods_supported": TOKEN_ENDPOINT_AUTH_METHODS,
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": True,
    }
    if not scopes:
        del document["scopes_supported"]  # zero values are omitted, never []
    if dpop_algorithms:
        # RFC 9449 section 5.1: the proof algorithms the token endpoint accepts.
        document["dpop_signing_alg_values_supported"] = list(dpop_algorithms)
    AuthorizationServerMetadata(document).validate(metadata_classes=[IssuerParameterMetadata])
    return document
