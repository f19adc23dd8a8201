"""Every error answers JSON: no HTML error pages, no stack trace, no token."""

from __future__ import annotations

import logging

from flask import Flask
from flask import Response
from flask import jsonify
from werkzeug.exceptions import HTTPException

logger = logging.getLogger(__name__)


def _http_error(error: HTTPException) -> Response:
    response = jsonify(error=(error.name or "error").lower().replace(" ", "_"), error_description=error.description)
    response.status_code = error.code or 500
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _unexpected_error(error: Exception) -> Response:
    logger.exception("unhandled error")
    response = jsonify(error="server_error", error_description="The server could not complete the request")
    response.status_code = 500
    return response


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
