"""Which verifier judges a bearer token: the issuer a JWT names, or introspection for an opaque one.

With several issuers (MCP_ISSUER as a list, or MCP_ISSUERS), a JWT is checked
only against the keys and audiences of the issuer it names: the unverified
``iss`` merely picks the validator, which then verifies everything, ``iss``
included, exactly. A token signed by one issuer's key but naming another fails
that other issuer's signature check.
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence

from joserfc.util import json_b64decode

from app.auth.challenges import InvalidToken
from app.auth.introspection import TokenIntrospection
from app.auth.jwks import KeyStore
from app.auth.jwt_access_token import JWTAccessTokenValidator
from app.auth.principal import Principal


def named_issuer(token: str) -> str | None:
    """The ``iss`` a JWT claims, unverified; None when there is none to read."""
    try:
        claims = json_b64decode(token.split(".")[1].encode())
    except (IndexError, ValueError, binascii.Error, RecursionError):
        return None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return issuer if isinstance(issuer, str) else None


class TokenVerifier:
    def __init__(
        self,
        validators: Sequence[JWTAccessTokenValidator],
        *,
        keys: Sequence[KeyStore] = (),
        introspection: TokenIntrospection | None = None,
    ) -> None:
        self._validators = {validator.issuer: validator for validator in validators}
        self._single = validators[0] if len(validators) == 1 else None
        self.key_stores = tuple(keys)
        self.introspection = introspection

    def validate(self, token: str) -> Principal:
        if self.introspection is not None and token.count(".") != 2:
            return self.introspection.validate(token)
        if self._single is not None:
            return self._single.validate(token)
        if token.count(".") != 2:
            return next(iter(self._validators.values())).validate(token)  # refuses it with the precise reason
        validator = self._validators.get(named_issuer(token) or "")
        if validator is None:
            raise InvalidToken("The access token was issued by another issuer")
        return validator.validate(token)
