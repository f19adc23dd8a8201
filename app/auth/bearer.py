"""RFC 6750 section 2.1 and RFC 9449 section 7.1: the access token from the ``Authorization`` request header.

https://www.rfc-editor.org/rfc/rfc6750#section-2.1
https://www.rfc-editor.org/rfc/rfc9449#section-7.1

Only the header is read. A token in the query string or a form field is never
looked at: OAuth 2.1 and the MCP authorization spec forbid both ("Access tokens
MUST NOT be included in the URI query string"). Both schemes carry the token
the same way (``b64token`` and ``token68`` are the same characters).
"""

from __future__ import annotations

import re
from collections.abc import Collection

from app.auth.challenges import InvalidRequest

BEARER = "bearer"
DPOP = "dpop"
_NAMES = {BEARER: "Bearer", DPOP: "DPoP"}
_CARRIED = {BEARER: "bearer token", DPOP: "access token"}

# b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def extract_credentials(header: str | None, schemes: Collection[str] = (BEARER,)) -> tuple[str, str] | None:
    """Return ``(scheme, token)`` with the scheme lower-cased, ``None`` when there is no credential at all.

    The scheme name is case-insensitive (RFC 7235 section 2.1) and one or more
    spaces may follow it (RFC 6750 ``1*SP``). Anything else that is not exactly
    one well-formed token in one of ``schemes`` (another scheme, no token, two
    tokens, a token with spaces or commas) is a malformed request:
    ``invalid_request``, status 400.
    """
    if header is None:
        return None
    value = header.strip(" \t")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    scheme = scheme.lower()
    if scheme not in schemes:
        names = " or ".join(_NAMES[s] for s in schemes)
        raise InvalidRequest(f"The Authorization header must use the {names} scheme")
    token = token.lstrip(" ")
    if not token:
        raise InvalidRequest("The Authorization header carries no token")
    if _B64TOKEN.fullmatch(token) is None:
        raise InvalidRequest(f"The Authorization header must carry exactly one {_CARRIED[scheme]}")
    return scheme, token


def extract_bearer_token(header: str | None) -> str | None:
    """The bearer token alone, for callers that accept no other scheme."""
    credentials = extract_credentials(header)
    return credentials[1] if credentials is not None else None
