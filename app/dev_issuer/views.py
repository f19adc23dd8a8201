"""The development authorization server's endpoints: authorize (consent page), token, register, revoke, keys, metadata.

https://www.rfc-editor.org/rfc/rfc6749#section-3.1
https://www.rfc-editor.org/rfc/rfc8414#section-3.1

The authorization endpoint is a server-rendered consent page with a
CSRF-protected form. A request whose client or redirect URI cannot be
trusted gets an error page and is never redirected (RFC 6749 section
4.1.2.1), and so does any error of a client no user ever allowed here (RFC
9700 section 4.11.2: registration is open, so a redirect to a fresh client's
URI would be an open redirector); every other error goes back to the client's
redirect URI with ``error``, ``state`` and RFC 9207 ``iss``. Every view is public (no bearer
token) and answers only on loopback hosts, like the server in development mode.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import cast
from urllib.parse import urlsplit

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant
from authlib.oauth2.rfc8414 import get_well_known_url
from flask import Blueprint
from flask import Response
from flask import make_response
from flask import render_template
from flask import request

from app.auth import public
from app.dev_issuer.consent_forms import COOKIE_NAME
from app.dev_issuer.consent_forms import COOKIE_PATH
from app.dev_issuer.consent_forms import ConsentForms
from app.dev_issuer.metadata import AUTHORIZE_PATH
from app.dev_issuer.metadata import JWKS_PATH
from app.dev_issuer.metadata import REGISTER_PATH
from app.dev_issuer.metadata import REVOKE_PATH
from app.dev_issuer.metadata import TOKEN_PATH
from app.dev_issuer.models import User
from app.dev_issuer.server import DevAuthorizationServer
from app.dev_issuer.signing import DevIssuer
from app.errors import InvalidClientMetadata
from app.settings import DEV_ISSUER_PATH
from app.settings import Settings

logger = logging.getLogger(__name__)

USERNAME = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
# RFC 6749 appendix A: every authorization request parameter is printable ASCII; a URI or a
# response type never holds a quote or a backslash (Authlib would put them in an error description).
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_URI_SAFE = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
CONSENT_FIELDS = frozenset({"csrf_token", "decision", "username"})
# The consent page runs no script, may not be framed (clickjacking) and loads nothing from elsewhere.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
}


def create_blueprint(server: DevAuthorizationServer, issuer: DevIssuer, settings: Settings) -> Blueprint:
    blueprint = Blueprint("dev_issuer", __name__)
    forms = ConsentForms(issuer.state_secret)
    metadata = json.dumps(server.metadata, indent=2).encode()
    jwks = json.dumps(issuer.jwks()).encode()

    def page(template: str, status: int = 200, **context: object) -> Response:
        response = make_response(render_template(template, settings=settings, **context), status)
        response.headers.update(PAGE_HEADERS)
        return response

    def error_page(error: str, description: str, status: int = 400) -> Response:
        return page("dev_issuer/error.html", status, error=error, description=description)

    def authorization_error(error: OAuth2Error) -> Response:
        # RFC 9700 section 4.11.2: an error redirect to the URI of a client nobody ever allowed (anyone can
        # register one, with any redirect URI) would make this server an open redirector.
        if error.redirect_uri and server.storage.consented(request.args.get("client_id", "")):
            # authlib's Flask integration answers with a Flask Response, and takes None for the request; its stub
            # types the framework-neutral base class (here and at each create_*_response below).
            response = cast(Response, server.handle_error_response(None, error))  # type: ignore[arg-type]  # it takes None for the request
            server.issuer_parameter.add_issuer_parameter(server, response)
            return response
        logger.info("refused an authorization request: %s (%s)", error.error, error.description)
        return error_page(str(error.error), str(error.description or ""))

    def consent_page(
        grant: AuthorizationCodeGrant, nonce: str, *, username: str = "", problem: str | None = None
    ) -> Response:
        client = grant.client
        scopes = [(scope, server.catalogue.describe(scope)) for scope in (grant.request.scope or "").split()]
        response = page(
            "dev_issuer/consent.html",
            400 if problem else 200,
            client=client,
            scopes=scopes,
            redirect_host=urlsplit(grant.redirect_uri).netloc or grant.redirect_uri,
            csrf_token=forms.token(nonce, request.query_string),
            action=request.full_path,
            username=username,
            problem=problem,
        )
        response.set_cookie(COOKIE_NAME, nonce, path=COOKIE_PATH, httponly=True, samesite="Strict")
        return response

    def malformed() -> Response | None:
        for name, value in request.args.items(multi=True):
            pattern = _URI_SAFE if name in ("redirect_uri", "response_type") else _PRINTABLE
            if not pattern.fullmatch(value) or len(value) > 2048:
                return error_page(
                    "invalid_request", f"The {name} parameter is malformed (printable ASCII, at most 2048 characters)."
                )
        return None

    @public
    def authorize() -> Response:
        refusal = malformed()
        if refusal is not None:
            return refusal
        if request.method == "GET":
            try:
                grant = server.get_consent_grant(end_user=None)  # type: ignore[no-untyped-call]  # untyped in the stub
            except OAuth2Error as error:
                return authorization_error(error)
            return consent_page(grant, request.cookies.get(COOKIE_NAME) or forms.new_nonce())

        nonce = request.cookies.get(COOKIE_NAME)
        if set(request.form) - CONSENT_FIELDS or not forms.valid(
            nonce, request.query_string, request.form.get("csrf_token")
        ):
            logger.info("refused a consent decision: missing or wrong CSRF token")
            return error_page(
                "invalid_request",
                "This consent form expired or did not come from this page. "
                "Go back to the application and start signing in again.",
                403,
            )
        try:
            grant = server.get_consent_grant(end_user=None)  # type: ignore[no-untyped-call]  # untyped in the stub
        except OAuth2Error as error:
            return authorization_error(error)
        decision = request.form.get("decision")
        if decision == "deny":
            logger.info("consent denied to client_id=%r", grant.client.get_client_id())
            return cast(Response, server.create_authorization_response(grant_user=None, grant=grant))
        if decision != "allow":
            return error_page("invalid_request", "The decision must be Allow or Deny.")
        username = request.form.get("username", "").strip()
        if not USERNAME.fullmatch(username):
            problem = "Enter a user name: 1 to 64 letters, digits or . _ @ + -"
            return consent_page(grant, nonce or forms.new_nonce(), username=username[:64], problem=problem)
        logger.info("consent given by sub=%r to client_id=%r", username, grant.client.get_client_id())
        server.storage.add_consent(grant.client.get_client_id(), username, int(time.time()))
        return cast(Response, server.create_authorization_response(grant_user=User(username), grant=grant))

    @public
    def token() -> Response:
        return cast(Response, server.create_token_response())

    @public
    def register() -> Response:
        if not isinstance(request.get_json(silent=True), dict):
            return InvalidClientMetadata(
                "The body must be a JSON object of client metadata (application/json)"
            ).response()
        return cast(Response, server.create_endpoint_response("client_registration"))  # type: ignore[no-untyped-call]  # untyped in the stub

    @public
    def revoke() -> Response:
        return cast(Response, server.create_endpoint_response("revocation"))  # type: ignore[no-untyped-call]  # untyped in the stub

    @public
    def authorization_server_metadata() -> Response:
        return Response(metadata, mimetype="application/json", headers={"Cache-Control": "no-cache"})

    @public
    def json_web_key_set() -> Response:
        return Response(jwks, mimetype="application/json", headers={"Cache-Control": "no-cache"})

    blueprint.add_url_rule(AUTHORIZE_PATH, view_func=authorize, methods=["GET", "POST"])
    blueprint.add_url_rule(TOKEN_PATH, view_func=token, methods=["POST"])
    blueprint.add_url_rule(REGISTER_PATH, view_func=register, methods=["POST"])
    blueprint.add_url_rule(REVOKE_PATH, view_func=revoke, methods=["POST"])
    blueprint.add_url_rule(JWKS_PATH, view_func=json_web_key_set)
    paths = []
    for suffix in ("oauth-authorization-server", "openid-configuration"):
        # RFC 8414 section 3.1 path insertion, and the appended form older clients try.
        paths += [get_well_known_url(issuer.issuer, suffix=suffix), f"{DEV_ISSUER_PATH}/.well-known/{suffix}"]
    for number, path in enumerate(paths):
        blueprint.add_url_rule(path, endpoint=f"metadata_{number}", view_func=authorization_server_metadata)
    return blueprint
