"""RFC 6750 section 2.1: the access token from the ``Authorization`` request header.

https://www.rfc-editor.org/rfc/rfc6750#section-2.1

Only the header is read. A token in the query string or a form field is never
looked at: OAuth 2.1 and the MCP authorization spec forbid both ("Access tokens
MUST NOT be included in the URI query string").
"""

from __future__ import annotations

import re

from app.auth.challenges import InvalidRequest

# b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def extract_bearer_token(header: str | None) -> str | None:
    """Return the bearer token, ``None`` when there is no credential at all.

    The scheme name is case-insensitive (RFC 7235 section 2.1) and one or more
    spaces may follow it (RFC 6750 ``1*SP``). Anything else that is not exactly
    one well-formed token (another scheme, no token, two tokens, a token with
    spaces or commas) is a malformed request: ``invalid_request``, status 400.
    """
    if header is None:
        return None
    value = header.strip(" \t")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        raise InvalidRequest("The Authorization header must use the Bearer scheme")
    token = token.lstrip(" ")
    if not token:
        raise InvalidRequest("The Authorization header carries no token")
    if _B64TOKEN.fullmatch(token) is None:
        raise InvalidRequest("The Authorization header must carry exactly one bearer token")
    return token
