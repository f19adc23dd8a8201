"""A Flask MCP server that accepts only OAuth 2.1 access tokens issued for it.

``create_app`` wires the parts together; configuration flows one way, from
:class:`~app.settings.Settings` into each part's ``init_app``.
"""

from __future__ import annotations

import gc
import logging
import re
from collections.abc import Callable

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from app import audit
from app import authorization_server_metadata
from app import cli
from app import cors
from app import dev_issuer
from app import errors
from app import health
from app import metrics
from app import principal_caps
from app import protected_resource
from app import rate_limits
from app import tool_providers
from app import transport_security
from app.auth import BearerAuthentication
from app.auth import dpop
from app.auth import init_app as init_auth
from app.auth.challenges import Challenger
from app.auth.introspection import TokenIntrospection
from app.auth.jwks import KeySource
from app.auth.jwks import KeyStore
from app.auth.jwks import RemoteJWKS
from app.auth.jwks import StaticJWKS
from app.auth.jwt_access_token import JWTAccessTokenValidator
from app.auth.scopes import ScopePolicy
from app.auth.token_verification import TokenVerifier
from app.bridge import MAX_BODY_BYTES
from app.bridge import init_app as init_bridge
from app.mcp_server import ScopedServer
from app.mcp_server import create_mcp_server
from app.provider import Provider
from app.settings import Settings

__all__ = ["create_app", "start_worker", "stop_worker"]

logger = logging.getLogger(__name__)


class RedactQueryStrings(logging.Filter):
    """Drop query strings from request lines: a misbehaving client may put a token there.

    The development server (``flask run``) logs whole request lines; gunicorn's
    access log format in gunicorn.conf.py never includes the query string.
    """

    _request_line = re.compile(r"^([A-Z]+ [^?\s]*)\?\S*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self._request_line.sub(r"\1", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def _configure_logging() -> None:
    # Before the SDK's MCPServer, whose own basicConfig would print bare messages.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    # The SDK logs every stateless exchange at INFO; keep its warnings and errors.
    logging.getLogger("mcp").setLevel(logging.WARNING)
    # One pure JSON object per line, whatever the format of the other logs.
    audit.audit_logger.setLevel(logging.INFO)
    audit.audit_logger.propagate = False
    if not any(getattr(handler, "mcp_audit", False) for handler in audit.audit_logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.mcp_audit = True  # type: ignore[attr-defined]
        audit.audit_logger.addHandler(handler)
    werkzeug_logger = logging.getLogger("werkzeug")
    if not any(isinstance(f, RedactQueryStrings) for f in werkzeug_logger.filters):
        werkzeug_logger.addFilter(RedactQueryStrings())


def create_app(settings: Settings | None = None, *, register_tools: Provider | None = None) -> Flask:
    """Build the application; without ``settings`` they are read from the environment.

    The tools, resources and prompts come from the providers MCP_TOOLS names
    (the examples when unset), or from ``register_tools`` when given (test
    fixtures pass their own).
    """
    # Under flask run, where it listens: development mode advertises that port.
    served = cli.flask_run_address() if settings is None else None
    settings = settings if settings is not None else Settings.from_env(served=served)
    _configure_logging()
    app = Flask(__name__, instance_path=settings.instance_path)
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY_BYTES)

    issuer = dev_issuer.DevIssuer(app.instance_path, settings) if settings.dev else None
    # Development mode: the resource server refuses what its own authorization server revoked.
    revoked = dev_issuer.revoked_access_tokens(app.instance_path) if issuer is not None else None
    state_secret = settings.state_secret or (issuer.state_secret if issuer is not None else None)
    policy = ScopePolicy()
    server = create_mcp_server(state_secret=state_secret)
    # Stateless, every request has an event loop of its own and a sync tool can run in the request's
    # thread; stateful, one loop serves every session and sync tools must not block it.
    tools = ScopedServer(
        server,
        policy,
        sync_in_request_thread=not settings.stateful,
        instance_path=app.instance_path,
        env=settings.environ,
    )
    settings = tool_providers.register(tools, settings, register_tools)
    app.extensions["mcp_settings"] = settings
    app.extensions["mcp_tools"] = tools

    if issuer is not None:
        logger.warning(
            "DEVELOPMENT MODE (MCP_DEV=1): this server is its own OAuth authorization server; never expose it. "
            "Open %s in a browser, or connect an MCP client to %s",
            settings.public_origin + "/",
            settings.resource_url,
        )
        cli.warn_if_served_elsewhere(settings, served)
    limits = rate_limits.RateLimits.from_settings(settings)
    if limits is not None:
        app.extensions["mcp_rate_limits"] = limits
    # The failed-credentials limit is asked before any call to the authorization server a token would cause.
    verifier = _token_verifier(settings, issuer, limits.check_outbound if limits is not None else None, revoked)
    app.extensions["mcp_keys"] = verifier.key_stores

    errors.init_app(app)
    audit.init_app(app, enabled=settings.audit_log)
    if settings.metrics:
        metrics.init_app(app, settings, known_tools=policy.tool_requirements())
    transport_security.init_app(app, settings)
    caps = principal_caps.PrincipalCaps.from_settings(settings, on_refusal=metrics.count_cap_refusal)
    if caps is not None:
        principal_caps.init_app(app, caps)
    # RFC 9449: DPoP proofs' jti values are remembered where the rate limits count (one Redis for all).
    replays = dpop.replay_cache(settings.rate_limit_storage)
    resource_dpop = dpop.ProtectedResourceDPoP.from_settings(settings, replays, state_secret)
    init_auth(
        app,
        BearerAuthentication(
            verifier=verifier,
            challenger=Challenger(
                protected_resource.metadata_url(settings),
                settings.scopes_supported,
                bearer=settings.dpop != "required",
                dpop_algorithms=resource_dpop.algorithms,
            ),
            scopes=policy,
            resource_url=settings.resource_url,
            dpop=resource_dpop,
            limits=limits,
            caps=caps,
            on_refusal=metrics.count_auth_failure,
            trusted_proxies=settings.trusted_proxies,
        ),
    )
    dpop.init_app(app, resource_dpop)
    protected_resource.init_app(app, settings)
    if settings.as_metadata_proxy:
        authorization_server_metadata.init_app(app, settings)
    health.init_app(app, verifier.key_stores)
    if issuer is not None:
        dev_issuer.init_app(app, issuer, settings, server, policy, replays, revoked)
    init_bridge(
        app,
        server,
        settings,
        tools.answered_at_once(),
        session_manager=caps.session_manager_factory() if caps else None,
    )
    cors.init_app(app, settings)
    cli.init_app(app)
    if settings.trusted_proxies:
        # X-Forwarded-For and -Proto are believed only from the configured number
        # of hops (nginx on the same VM is one); with 0 they are ignored, so a
        # client cannot fake its address. The Host header is not taken from
        # X-Forwarded-Host: nginx passes the client's Host through, and public
        # URLs come from MCP_RESOURCE_URL anyway. ``app`` stays a Flask object.
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    return app


def _token_verifier(
    settings: Settings,
    issuer: dev_issuer.DevIssuer | None,
    before_outbound: Callable[[], None] | None = None,
    revoked: dev_issuer.RevokedAccessTokens | None = None,
) -> TokenVerifier:
    """One validator with its own key cache per trusted issuer; introspection for opaque tokens if configured.

    ``before_outbound`` runs before a call to an authorization server that a request's token causes (an
    introspection, a key fetch for an unknown ``kid``) and may refuse it by raising. ``revoked``: the
    development issuer's revoked tokens, which its validator refuses.
    """
    validators, stores = [], []
    for config in settings.issuers:
        source: KeySource = (
            StaticJWKS(issuer.jwks()) if issuer is not None else RemoteJWKS(config.issuer, config.jwks_uri)
        )
        keys = KeyStore(
            source,
            ttl=settings.jwks_ttl,
            refetch_cooldown=settings.jwks_refetch_cooldown,
            on_fetch=metrics.count_jwks_fetch,
            before_refetch=before_outbound,
        )
        stores.append(keys)
        options = {
            "issuer": config.issuer,
            "audiences": config.audiences,
            "keys": keys,
            "profile": settings.token_profile,
            "leeway": settings.clock_leeway,
            "scope_claims": settings.scope_claims,
        }
        validators.append(
            dev_issuer.RevokingValidator(revoked=revoked, **options)
            if revoked is not None
            else JWTAccessTokenValidator(**options)  # type: ignore[arg-type]
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


def start_worker(app: Flask, stopping: Callable[[], bool] | None = None) -> None:
    """Get a freshly forked worker ready: an event loop for the bridge, the signing keys loaded.

    ``stopping`` tells when the worker has been told to stop (stateful mode then ends its open session streams).
    """
    app.extensions["mcp_bridge"].start_worker(stopping)
    for keys in app.extensions["mcp_keys"]:
        keys.ensure_loaded()
    # Everything alive now (the app, the SDK, the loaded modules) lives as long as the worker: move it
    # out of the collector's sight, so full collections scan only what requests allocate. Measured
    # with bench/run.py: about 10 % less CPU per request and a much shorter p99.
    gc.collect()
    gc.freeze()


def stop_worker(app: Flask) -> None:
    """Close the worker's event loops, so their threads end and the process can exit."""
    app.extensions["mcp_bridge"].stop_worker()
