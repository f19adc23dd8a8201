"""Bearer authentication: the one ``before_request`` hook that lets a request in or answers a challenge.

Every request is authenticated except the views marked :func:`public` (the
discovery documents, health checks, the development issuer) and CORS
preflights. Nothing of the body reaches the SDK before the token is verified
(MCP security considerations: "MCP servers MUST validate access tokens before
processing the request"). For ``tools/call``, ``resources/read`` and
``prompts/get`` the hook also checks the scopes of the tool, resource or prompt
and answers ``403 insufficient_scope`` before the SDK runs, so a client can
step up (a JSON-RPC error inside a 200 gives it nothing to act on). The names
come from :mod:`app.mcp_request`, which reads the body itself. DPoP (RFC 9449,
:mod:`app.auth.dpop`) is checked only when the DPoP scheme, a token bound by
``cnf`` or MCP_DPOP=required calls for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING
from typing import Any
from typing import TypeVar

from flask import Flask
from flask import Response
from flask import current_app
from flask import g
from flask import request

from app.auth.bearer import DPOP
from app.auth.bearer import extract_credentials
from app.auth.challenges import BearerError
from app.auth.challenges import Challenger
from app.auth.challenges import InsufficientScope
from app.auth.challenges import MissingToken
from app.auth.challenges import VerifierUnavailable
from app.auth.dpop import ProtectedResourceDPoP
from app.auth.introspection import TokenIntrospection
from app.auth.jwks import KeySource
from app.auth.jwks import KeyStore
from app.auth.jwks import RemoteJWKS
from app.auth.jwks import StaticJWKS
from app.auth.jwt_access_token import JWTAccessTokenValidator
from app.auth.principal import Principal
from app.auth.scopes import ScopePolicy
from app.auth.token_verification import TokenVerifier
from app.mcp_request import current_mcp_request
from app.rate_limits import RateLimits
from app.rate_limits import TooManyRefusals
from app.settings import Settings

if TYPE_CHECKING:
    # Only a type here: app.principal_caps counts the bridge's sessions, and auth must not load the bridge.
    from app.principal_caps import PrincipalCaps

logger = logging.getLogger(__name__)

EXTENSION_KEY = "mcp_auth"
FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")
F = TypeVar("F", bound=Callable[..., Any])


def public(view: F) -> F:
    """Mark a view as reachable without a token."""
    view._public = True  # type: ignore[attr-defined]  # a marker on the function, read by _is_public
    return view


@dataclass(kw_only=True, eq=False)
class BearerAuthentication:
    """The pieces the hook needs, built once per app.

    ``on_refusal(reason)`` hears of every refusal (metrics): the error code, ``no_token``, or
    ``VerifierUnavailable.reason``. ``dpop``: RFC 9449 at this resource (by default: Bearer only). ``caps``:
    what one caller may hold at once (:mod:`app.principal_caps`), counted once it is verified.
    """

    verifier: TokenVerifier
    challenger: Challenger
    scopes: ScopePolicy
    dpop: ProtectedResourceDPoP = field(default_factory=ProtectedResourceDPoP)
    limits: RateLimits | None = None
    caps: PrincipalCaps | None = None
    mcp_endpoint: str = "mcp"
    on_refusal: Callable[[str], None] | None = None
    trusted_proxies: int = 0

    def __post_init__(self) -> None:
        self._proxy_warned = self.trusted_proxies > 0
        self._public: dict[str | None, bool] = {}

    def authenticate(self) -> Response | None:
        # The request and g are looked up once: every access through Flask's proxies costs a context lookup.
        req = request._get_current_object()  # type: ignore[attr-defined]  # Flask types the proxy as a Request
        environ = req.environ
        if req.method == "OPTIONS" and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ:
            return None  # a CORS preflight carries no credentials by design
        endpoint = req.endpoint
        if self._is_public(endpoint):
            return None
        ctx = g._get_current_object()
        try:
            credentials = extract_credentials(environ.get("HTTP_AUTHORIZATION"), self.dpop.schemes)
            if credentials is None:
                raise MissingToken("An access token is required")
            scheme, token = credentials
            principal = self.verifier.validate(token)
            ctx.principal = principal
            ctx.claims = principal.claims
            # RFC 9449: a Bearer request with an unbound token, where bearer tokens are allowed, needs nothing more.
            if scheme == DPOP or principal.jkt is not None or self.dpop.required:
                self.dpop.check(scheme, token, principal)
            if self.limits is not None and (too_many := self.limits.admit(principal)) is not None:
                return too_many
            if endpoint == self.mcp_endpoint:
                # For the bridge, which hands the caller to the SDK (app.bridge.auth_context).
                ctx.access_token = token
                self._check_scopes(principal)
                # Last: a request refused above holds nothing.
                if self.caps is not None and (over := self.caps.admit(ctx, principal, req.method, environ)):
                    return over
        except TooManyRefusals as refused:
            # The token needed the authorization server's word, and this address is past its limit.
            self._warn_if_proxied(environ)
            return refused.response
        except BearerError as error:
            ctx.auth_error = error
            self._log_refusal(error)
            self._warn_if_proxied(environ)
            if self.limits is not None and error.status_code != 403:
                too_many = self.limits.refuse(req.remote_addr)
                if too_many is not None:
                    return too_many
            return self.challenger.response(error)
        except VerifierUnavailable as error:
            logger.error("refusing a request: %s", error.cause)
            if self.on_refusal is not None:
                self.on_refusal(error.reason)
            return error.response()
        return None

    def _warn_if_proxied(self, environ: dict[str, Any]) -> None:
        """Once per worker, on a refusal: say so if requests come through a proxy this server does not trust.

        With MCP_TRUSTED_PROXIES=0 the failed-credentials limit keys on the TCP peer;
        behind nginx that is 127.0.0.1 for every client, so one guesser's refusals
        would turn everyone's 401 into 429. Checked on refusals only: nothing per
        accepted request.
        """
        if self._proxy_warned:
            return
        if any(name in environ for name in FORWARDING_HEADERS):
            self._proxy_warned = True
            logger.warning(
                "requests arrive through a proxy (they carry X-Forwarded-For or Forwarded) but MCP_TRUSTED_PROXIES "
                "is 0: every client then shares the proxy's address %s, and with it one failed-credentials limit "
                "(MCP_RATE_LIMIT_FAILED_AUTH). Behind the shipped nginx site set MCP_TRUSTED_PROXIES=1",
                environ.get("REMOTE_ADDR"),
            )

    def _is_public(self, endpoint: str | None) -> bool:
        public = self._public.get(endpoint)
        if public is None:
            view = current_app.view_functions.get(endpoint or "")
            public = self._public[endpoint] = view is not None and getattr(view, "_public", False)
        return public

    def _check_scopes(self, principal: Principal) -> None:
        required: set[str] = set()
        for call in current_mcp_request().calls:
            required |= self.scopes.required_for(call)
        if required and self.scopes.missing(principal.scopes, required):
            needed = sorted(required)
            raise InsufficientScope(f"This call requires the scopes: {' '.join(needed)}", scope=needed)

    def _log_refusal(self, error: BearerError) -> None:
        if self.on_refusal is not None:
            self.on_refusal(error.error or "no_token")
        principal: Principal | None = g.get("principal")
        logger.info(
            "refused %s %s: %s %s (%s)%s",
            request.method,
            request.path,
            error.status_code,
            error.error or "no_token",
            error.description,
            f" sub={principal.sub!r} client_id={principal.client_id!r}" if principal else "",
        )


def init_app(
    app: Flask,
    settings: Settings,
    *,
    resource_metadata_url: str,
    scopes: ScopePolicy,
    dpop: ProtectedResourceDPoP,
    limits: RateLimits | None = None,
    caps: PrincipalCaps | None = None,
    dev_keys: dict[str, Any] | None = None,
    validator: Callable[..., JWTAccessTokenValidator] = JWTAccessTokenValidator,
    on_key_fetch: Callable[[str], None] | None = None,
    on_refusal: Callable[[str], None] | None = None,
) -> None:
    """Build the token verifier and the challenges from settings and register the authentication hook.

    ``resource_metadata_url``: where the protected resource metadata (RFC 9728) is, named in every challenge.
    ``dev_keys``: the development issuer's JWKS (its keys are local, never fetched); ``validator``: the
    JWT validator class (the development issuer's refuses what it revoked). The key caches are kept in
    ``app.extensions["mcp_keys"]`` for the readiness check and the workers' start.
    """
    # The failed-credentials limit is asked before any call to the authorization server a token would cause.
    verifier = token_verifier(
        settings,
        dev_keys=dev_keys,
        validator=validator,
        before_outbound=limits.check_outbound if limits is not None else None,
        on_key_fetch=on_key_fetch,
    )
    app.extensions["mcp_keys"] = verifier.key_stores
    authentication = BearerAuthentication(
        verifier=verifier,
        challenger=Challenger(
            resource_metadata_url,
            settings.scopes_supported,
            bearer=settings.dpop != "required",
            dpop_algorithms=dpop.algorithms,
        ),
        scopes=scopes,
        dpop=dpop,
        limits=limits,
        caps=caps,
        on_refusal=on_refusal,
        trusted_proxies=settings.trusted_proxies,
    )
    app.extensions[EXTENSION_KEY] = authentication
    app.before_request(authentication.authenticate)


def token_verifier(
    settings: Settings,
    *,
    dev_keys: dict[str, Any] | None = None,
    validator: Callable[..., JWTAccessTokenValidator] = JWTAccessTokenValidator,
    before_outbound: Callable[[], None] | None = None,
    on_key_fetch: Callable[[str], None] | None = None,
) -> TokenVerifier:
    """One validator with its own key cache per trusted issuer; introspection for opaque tokens if configured.

    ``before_outbound`` runs before a call to an authorization server that a request's token causes (an
    introspection, a key fetch for an unknown ``kid``) and may refuse it by raising.
    """
    validators, stores = [], []
    for config in settings.issuers:
        source: KeySource = StaticJWKS(dev_keys) if dev_keys is not None else RemoteJWKS(config.issuer, config.jwks_uri)
        keys = KeyStore(
            source,
            ttl=settings.jwks_ttl,
            refetch_cooldown=settings.jwks_refetch_cooldown,
            on_fetch=on_key_fetch,
            before_refetch=before_outbound,
        )
        stores.append(keys)
        validators.append(
            validator(
                issuer=config.issuer,
                audiences=config.audiences,
                keys=keys,
                profile=settings.token_profile,
                leeway=settings.clock_leeway,
                scope_claims=settings.scope_claims,
            )
        )
    introspection = None
    if settings.introspection_url:
        assert settings.introspection_client_id and settings.introspection_client_secret
        introspection = TokenIntrospection(
            url=settings.introspection_url,
            client_id=settings.introspection_client_id,
            client_secret=settings.introspection_client_secret,
            issuers=[config.issuer for config in settings.issuers],
            audiences=sorted({a for config in settings.issuers for a in config.audiences}),
            leeway=settings.clock_leeway,
            scope_claims=settings.scope_claims,
            retry_after=settings.jwks_refetch_cooldown,
            before_call=before_outbound,
        )
    return TokenVerifier(validators, keys=stores, introspection=introspection)
