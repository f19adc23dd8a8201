"""RFC 6750 section 3, RFC 9449 section 7.1 and MCP: the errors a protected resource answers with.

https://www.rfc-editor.org/rfc/rfc6750#section-3
https://www.rfc-editor.org/rfc/rfc9449#section-7.1
https://modelcontextprotocol.io/specification/2026-07-28/basic/authorization

One class per wire error carries its status and error code. :class:`Challenger`
turns one into a response with one ``WWW-Authenticate`` challenge per scheme the
server accepts (``Bearer`` first, since clients such as the TypeScript SDK read
only a leading Bearer challenge; then ``DPoP`` with its ``algs``). Each always
names the protected resource metadata by an absolute URL built from
configuration, never from the request's Host (RFC 9728 section 5.1). An error
about the token goes on both challenges; an error about the DPoP proof only on
the DPoP one. Every class here is part of :mod:`app.errors`' tree, which
renders the body.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from collections.abc import Sequence
from typing import ClassVar

from flask import Response

from app.errors import Headers
from app.errors import JSONError
from app.errors import TemporarilyUnavailable

# RFC 6750 section 3: error_description and scope values MUST NOT include
# characters outside %x20-21 / %x23-5B / %x5D-7E.
_UNSAFE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def quoted_safe(value: str) -> str:
    """Make ``value`` legal inside a quoted auth-param (no quote, backslash, control or non-ASCII)."""
    return _UNSAFE.sub("?", value)


class BearerError(JSONError):
    """An authentication or authorization failure that the client can act on.

    ``error`` None (no credentials) puts no code on the challenge; the body then says ``unauthorized``.
    """

    status_code = 401
    error: str | None = None
    default_error = "unauthorized"
    #: RFC 9449: an error about the DPoP proof, not the token; only the DPoP challenge names it.
    proof_error: bool = False

    def __init__(self, description: str, *, scope: Iterable[str] | None = None, headers: Headers = ()) -> None:
        super().__init__(description, headers=headers)
        self.scope = tuple(scope) if scope is not None else None


class MissingToken(BearerError):
    """No credentials: RFC 6750 section 3.1 says the challenge SHOULD NOT carry an error code (401, ``error`` None)."""


class InvalidRequest(BearerError):
    """RFC 6750 section 3.1 ``invalid_request``: a malformed Authorization header."""

    status_code = 400
    error = "invalid_request"


class InvalidToken(BearerError):
    """RFC 6750 section 3.1 ``invalid_token``: expired, revoked, malformed or not ours."""

    error = "invalid_token"


class InsufficientScope(BearerError):
    """RFC 6750 section 3.1 ``insufficient_scope``; MCP: scope lists everything the call needs."""

    status_code = 403
    error = "insufficient_scope"


class DPoPProofError(BearerError):
    """RFC 9449: an error about the DPoP proof, not the token (401); only the DPoP challenge names it."""

    proof_error = True


class InvalidDPoPProof(DPoPProofError):
    """RFC 9449 section 7.1 ``invalid_dpop_proof``: the DPoP proof fails a check of section 4.3."""

    error = "invalid_dpop_proof"


class UseDPoPNonce(DPoPProofError):
    """RFC 9449 section 9 ``use_dpop_nonce``: 401 with the nonce the next proof must carry."""

    error = "use_dpop_nonce"

    def __init__(self, description: str, *, nonce: str) -> None:
        super().__init__(description, headers=[("DPoP-Nonce", nonce)])
        self.nonce = nonce


class VerifierUnavailable(TemporarilyUnavailable):
    """The token can be neither accepted nor refused now: 503 with ``Retry-After``, never a guess.

    Each cause is its own class, so the operator's log line and the
    ``mcp_auth_failures_total`` reason name what is actually down.
    """

    #: What the log line says is down.
    cause: ClassVar[str] = "the token verifier is unavailable"
    #: The ``reason`` label of ``mcp_auth_failures_total``.
    reason: ClassVar[str] = "verifier_unavailable"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "The server cannot verify access tokens right now; retry later",
            retry_after=retry_after,
            headers=[("Cache-Control", "no-store")],
        )

    def __str__(self) -> str:
        return self.cause


class KeysUnavailable(VerifierUnavailable):
    """No signing keys could be loaded: a JWT can be neither accepted nor refused."""

    cause = "signing keys are unavailable"
    reason = "keys_unavailable"


class Challenger:
    """Builds challenge responses; the constant parts are computed once at startup.

    ``bearer`` says whether the Bearer scheme is accepted; ``dpop_algorithms``,
    when not empty, that the DPoP scheme is, with proofs signed by these.
    """

    def __init__(
        self,
        resource_metadata_url: str,
        default_scopes: Iterable[str] = (),
        *,
        bearer: bool = True,
        dpop_algorithms: Sequence[str] = (),
    ) -> None:
        self._metadata_param = f'resource_metadata="{quoted_safe(resource_metadata_url)}"'
        self._default_scope = " ".join(default_scopes)
        self._bearer = bearer
        # RFC 9449 section 7.1: algs, "a space-delimited list of the JWS alg values ... for DPoP proof JWTs".
        self._algs_param = f'algs="{" ".join(dpop_algorithms)}"' if dpop_algorithms else None

    def www_authenticate(self, error: BearerError) -> list[str]:
        """One challenge per accepted scheme, each a whole ``WWW-Authenticate`` field value."""
        error_params = []
        if error.error is not None:
            error_params.append(f'error="{error.error}"')
            error_params.append(f'error_description="{quoted_safe(error.description)}"')
        scope = " ".join(error.scope) if error.scope is not None else self._default_scope
        tail = [f'scope="{quoted_safe(scope)}"', self._metadata_param] if scope else [self._metadata_param]
        challenges = []
        if self._bearer:
            challenges.append("Bearer " + ", ".join([*([] if error.proof_error else error_params), *tail]))
        if self._algs_param is not None:
            challenges.append("DPoP " + ", ".join([*error_params, self._algs_param, *tail]))
        return challenges

    def response(self, error: BearerError) -> Response:
        """The error with its challenges: ``WWW-Authenticate`` first, then ``Cache-Control``, then its own."""
        headers = [("WWW-Authenticate", challenge) for challenge in self.www_authenticate(error)]
        return error.response([*headers, ("Cache-Control", "no-store")])

    @staticmethod
    def unavailable(error: VerifierUnavailable) -> Response:
        """No challenge: the client did nothing wrong, and retrying later is all it can do."""
        return error.response()
