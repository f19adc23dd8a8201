"""A Flask MCP server that accepts only OAuth 2.1 access tokens issued for it.

``create_app`` wires the parts together; configuration flows one way, from
:class:`~app.settings.Settings` into each part's ``init_app``.
"""

from __future__ import annotations

import functools
import gc
import logging
from collections.abc import Callable

from flask import Flask

from app import audit
from app import auth
from app import authorization_server_metadata
from app import cli
from app import cors
from app import dev_issuer
from app import errors
from app import health
from app import logging_setup
from app import metrics
from app import principal_caps
from app import protected_resource
from app import proxies
from app import rate_limits
from app import tool_providers
from app import transport_security
from app.auth import dpop
from app.auth.jwt_access_token import JWTAccessTokenValidator
from app.auth.scopes import ScopePolicy
from app.bridge import MAX_BODY_BYTES
from app.bridge import init_app as init_bridge
from app.mcp_server import ScopedServer
from app.mcp_server import create_mcp_server
from app.provider import Provider
from app.settings import Settings

__all__ = ["create_app", "start_worker", "stop_worker"]

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, register_tools: Provider | None = None) -> Flask:
    """Build the application; without ``settings`` they are read from the environment.

    The tools, resources and prompts come from the providers MCP_TOOLS names
    (the examples when unset), or from ``register_tools`` when given (test
    fixtures pass their own).

    The parts are registered in the order a request meets them, and that order
    is behaviour: Flask runs ``before_request`` hooks in registration order and
    ``after_request`` hooks in reverse. ``audit`` comes first, so its
    after-request hook runs last and puts the request id and the audit line on
    the final response, refusals included; ``metrics`` next, so it counts every
    response; ``transport_security`` checks Host, Origin and (development) the
    peer before any token is read; the per-caller caps release what a response
    held; ``auth`` (then DPoP) is the one hook that verifies a token, so a
    request refused earlier costs no verification. The views follow, then CORS
    on the way out, and ProxyFix wraps everything, so every hook sees the
    client's address.
    """
    # Under flask run, where it listens: development mode advertises that port.
    served = cli.flask_run_address() if settings is None else None
    settings = settings if settings is not None else Settings.from_env(served=served)
    logging_setup.init_app()
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
    auth.init_app(
        app,
        settings,
        resource_metadata_url=protected_resource.metadata_url(settings),
        scopes=policy,
        dpop=resource_dpop,
        limits=limits,
        caps=caps,
        dev_keys=issuer.jwks() if issuer is not None else None,
        validator=functools.partial(dev_issuer.RevokingValidator, revoked=revoked)
        if revoked is not None
        else JWTAccessTokenValidator,
        on_key_fetch=metrics.count_jwks_fetch,
        on_refusal=metrics.count_auth_failure,
    )
    dpop.init_app(app, resource_dpop)
    protected_resource.init_app(app, settings)
    if settings.as_metadata_proxy:
        authorization_server_metadata.init_app(app, settings)
    health.init_app(app, app.extensions["mcp_keys"])
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
    proxies.init_app(app, settings)
    return app


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
    """Close the worker's event loops, so their threads end and the process can exit; write the last counts."""
    app.extensions["mcp_bridge"].stop_worker()
    metrics.tallies.flush()  # atexit would too, unless the process ends without running it
