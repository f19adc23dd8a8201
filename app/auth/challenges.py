"""RFC 6750 section 3 and the MCP authorization spec: the errors a protected resource answers with.

https://www.rfc-editor.org/rfc/rfc6750#section-3
https://modelcontextprotocol.io/specification/2026-07-28/basic/authorization

One class per wire error carries its status and error code. :class:`Challenger`
turns one into a response whose ``WWW-Authenticate`` header always names the
protected resource metadata by an absolute URL built from configuration, never
from the request's Host (RFC 9728 section 5.1).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from flask import Response

# RFC 6750 section 3: error_description and scope values MUST NOT include
# characters outside %x20-21 / %x23-5B / %x5D-7E.
_UNSAFE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def quoted_safe(value: str) -> str:
    """Make ``value`` legal inside a quoted auth-param (no quote, backslash, control or non-ASCII)."""
    return _UNSAFE.sub("?", value)


class BearerError(Exception):
    """An authentication or authorization failure that the client can act on."""

    status_code: int = 401
    error: str | None = None

    def __init__(self, description: str, *, scope: Iterable[str] | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.scope = tuple(scope) if scope is not None else None


class MissingToken(BearerError):
    """No credentials: RFC 6750 section 3.1 says the challenge SHOULD NOT carry an error code."""

    status_code = 401
    error = None


class InvalidRequest(BearerError):
    """RFC 6750 section 3.1 ``invalid_request``: a malformed Authorization header."""

    status_code = 400
    error = "invalid_request"


class InvalidToken(BearerError):
    """RFC 6750 section 3.1 ``invalid_token``: expired, revoked, malformed or not ours."""

    status_code = 401
    error = "invalid_token"


class InsufficientScope(BearerError):
    """RFC 6750 section 3.1 ``insufficient_scope``; MCP: scope lists everything the call needs."""

    status_code = 403
    error = "insufficient_scope"


class KeysUnavailable(Exception):
    """No signing keys could be loaded: the token can be neither accepted nor refused."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("signing keys are unavailable")
        self.retry_after = retry_after


class Challenger:
    """Builds challenge responses; the constant parts are computed once at startup."""

    def __init__(self, resource_metadata_url: str, default_scopes: Iterable[str] = ()) -> None:
        self._metadata_param = f'resource_metadata="{quoted_safe(resource_metadata_url)}"'
        self._default_scope = " ".join(default_scopes)

    def www_authenticate(self, error: BearerError) -> str:
        params = []
        if error.error is not None:
            params.append(f'error="{error.error}"')
            params.append(f'error_description="{quoted_safe(error.description)}"')
        scope = " ".join(error.scope) if error.scope is not None else self._default_scope
        if scope:
            params.append(f'scope="{quoted_safe(scope)}"')
        params.append(self._metadata_param)
        return "Bearer " + ", ".join(params)

    def response(self, error: BearerError) -> Response:
        body = {"error": error.error or "unauthorized", "error_description": error.description}
        return Response(
            json.dumps(body),
            status=error.status_code,
            mimetype="application/json",
            headers={"WWW-Authenticate": self.www_authenticate(error), "Cache-Control": "no-store"},
        )

    @staticmethod
    def unavailable(error: KeysUnavailable) -> Response:
        body = {
            "error": "temporarily_unavailable",
            "error_description": "The server cannot verify access tokens right now; retry later",
        }
        return Response(
            json.dumps(body),
            status=503,
            mimetype="application/json",
            headers={"Retry-After": str(error.retry_after), "Cache-Control": "no-store"},
        )
