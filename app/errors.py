"""One error tree: every refusal this server answers with is a :class:`JSONError`.

As Authlib's ``OAuth2Error`` does, each wire answer is one class that knows its
status, its ``error`` code and its headers; :meth:`JSONError.response` is the
one place that renders them, always as the JSON body RFC 6749 section 5.2 and
RFC 6750 section 3 describe, ``{"error": ..., "error_description": ...}``.
A refusal is either returned from a hook or view as ``error.response()`` or
raised and rendered by the handler :func:`init_app` registers; Werkzeug's own
HTTP errors and unexpected exceptions are rendered through the same tree, so
no HTML error page and no stack trace ever reaches a client.

https://www.rfc-editor.org/rfc/rfc6749#section-5.2
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import ClassVar

from flask import Flask
from flask import Response
from werkzeug.exceptions import HTTPException

logger = logging.getLogger(__name__)

Headers = Iterable[tuple[str, str]]


class JSONError(Exception):
    """A refusal: its status, ``error`` code, description and headers, rendered as one JSON body."""

    status_code: int = 400
    #: The ``error`` member; None for an error that has no code of its own (see ``default_error``).
    error: str | None = None
    #: The ``error`` member of the body when ``error`` is None.
    default_error: ClassVar[str] = "error"
    #: Headers every answer of this class carries, after the instance's own.
    fixed_headers: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, description: str, *, headers: Headers = ()) -> None:
        super().__init__(description)
        self.description = description
        self._headers = tuple(headers)

    def headers(self) -> dict[str, str]:
        """This answer's headers besides Content-Type."""
        return dict([*self._headers, *self.fixed_headers])

    def body(self) -> dict[str, str]:
        return {"error": self.error or self.default_error, "error_description": self.description}

    def response(self, headers: Headers = ()) -> Response:
        """The answer on the wire; ``headers`` (a challenge, say) go before the error's own."""
        return Response(
            json.dumps(self.body()),
            status=self.status_code,
            mimetype="application/json",
            headers=[*headers, *self.headers().items()],
        )


class ServerError(JSONError):
    """RFC 6749 section 4.1.2.1 ``server_error``: the server could not complete the request."""

    status_code = 500
    error = "server_error"


class RetryLater(JSONError):
    """A refusal that says when to try again: ``Retry-After`` (RFC 9110 section 10.2.3) before its other headers."""

    def __init__(self, description: str, *, retry_after: int, headers: Headers = ()) -> None:
        super().__init__(description, headers=[("Retry-After", str(retry_after)), *headers])
        self.retry_after = retry_after


class TemporarilyUnavailable(RetryLater):
    """RFC 6749 section 4.1.2.1 ``temporarily_unavailable``: 503, the server cannot answer now."""

    status_code = 503
    error = "temporarily_unavailable"


class TooManyRequests(RetryLater):
    """RFC 6585 section 4: 429, with the limit that was reached."""

    status_code = 429
    error = "too_many_requests"

    def __init__(self, description: str, *, retry_after: int, limit: int) -> None:
        super().__init__(description, retry_after=retry_after, headers=[("X-RateLimit-Limit", str(limit))])


class Forbidden(JSONError):
    """RFC 9110 section 15.5.4 (403): the request is understood and refused."""

    status_code = 403
    error = "forbidden"


class InvalidClientMetadata(JSONError):
    """RFC 7591 section 3.2.2 ``invalid_client_metadata`` (400)."""

    error = "invalid_client_metadata"
    fixed_headers = (("Cache-Control", "no-store"),)


class HTTPError(JSONError):
    """One of Werkzeug's HTTP errors (404, 405, 413 ...), in the same body as every other refusal."""

    def __init__(self, exception: HTTPException) -> None:
        headers = [(name, value) for name, value in exception.get_headers() if name.lower() != "content-type"]
        super().__init__(exception.description or "", headers=headers)
        self.status_code = exception.code or 500
        self.error = (exception.name or "error").lower().replace(" ", "_")


def _http_error(exception: HTTPException) -> Response:
    return HTTPError(exception).response()


def _json_error(error: JSONError) -> Response:
    return error.response()


def _unexpected_error(error: Exception) -> Response:
    logger.exception("unhandled error")
    return ServerError("The server could not complete the request").response()


def init_app(app: Flask) -> None:
    app.register_error_handler(JSONError, _json_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
