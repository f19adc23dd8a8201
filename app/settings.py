"""Settings: the environment (plus an optional ``.env`` file), validated once.

Configuration flows one way: environment -> :class:`Settings` -> the parts that
need it. Nothing else in the package reads ``os.environ``. A misconfiguration
raises :class:`SettingsError`, whose message is one line naming the variable,
so the process can stop with that line instead of a stack trace.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import MISSING
from dataclasses import dataclass
from dataclasses import field
from dataclasses import fields
from pathlib import Path
from types import MappingProxyType
from typing import Any
from typing import Literal
from typing import TypedDict
from typing import get_args
from urllib.parse import urlsplit

from dotenv import dotenv_values
from limits import parse_many

from app.urls import is_loopback_host
from app.urls import origin
from app.urls import url_problem

DEV_PORT = 5000
DEV_RESOURCE_URL = f"http://127.0.0.1:{DEV_PORT}/mcp"
DEV_ISSUER_PATH = "/dev-issuer"
# MCP_WORKERS: how many worker processes gunicorn runs (gunicorn.conf.py reads it with worker_count). Under
# gunicorn the workers read the count it actually runs (its on_starting hook writes it back); a process gunicorn
# did not start (flask run, a flask command) is one process unless MCP_WORKERS says otherwise.
WORKERS_VARIABLE = "MCP_WORKERS"
DEFAULT_WORKERS = 2

TokenProfile = Literal["jwt", "rfc9068"]
# An import path: a dotted module path, then ``:`` (or ``.``) and the function's name.
_PROVIDER = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*)?")
DPoPMode = Literal["off", "allowed", "required"]
# RFC 9449 section 4.2: alg MUST NOT be none or a symmetric (MAC) algorithm. These are the asymmetric
# JWS algorithms joserfc verifies; the default is every one of them in common use.
DPOP_ASYMMETRIC_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512", "Ed25519", "Ed448", "EdDSA"}
)
DEFAULT_DPOP_ALGORITHMS = (
    "ES256",
    "ES384",
    "ES512",
    "PS256",
    "PS384",
    "PS512",
    "RS256",
    "RS384",
    "RS512",
    "Ed25519",
    "EdDSA",
)
# MCP_INSTANCE_NAME: a DNS label in lower case (a port number is one), so it fits a session id, a log line
# and an nginx map key unquoted.
_INSTANCE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")


@dataclass(frozen=True)
class IssuerConfig:
    """One trusted issuer: its keys (discovered when ``jwks_uri`` is None) and the audiences it may name."""

    issuer: str
    jwks_uri: str | None
    audiences: tuple[str, ...]


@dataclass(frozen=True)
class ServedAddress:
    """Where the development server listens, when it is the one loading the app (``flask run``)."""

    host: str
    port: int
    https: bool = False


class SettingsError(ValueError):
    """A configuration problem, reported as ``VARIABLE: what is wrong``."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to know, already checked."""

    resource_url: str
    issuers: tuple[IssuerConfig, ...]
    authorization_servers: tuple[str, ...] = ()
    scopes_supported: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    token_profile: TokenProfile = "jwt"  # noqa: S105 (a profile name)
    state_secret: str | None = None
    # The tool providers' import paths (MCP_TOOLS); empty: the installed ones, else the examples (app.tool_providers).
    tools: tuple[str, ...] = ()
    dev: bool = False
    resource_name: str = "Flask MCP server"
    clock_leeway: int = 30
    jwks_ttl: int = 3600
    jwks_refetch_cooldown: int = 30
    # MCP_SCOPE_HIERARCHY; None when unset, so the hierarchy the tool providers declare applies.
    scope_hierarchy: Mapping[str, frozenset[str]] | None = None
    # Development mode without MCP_SCOPES_SUPPORTED: advertise what the tool providers ask for (by default every
    # scope they require), so a newcomer's client asks for it in one consent (create_app fills scopes_supported in).
    advertise_required_scopes: bool = False
    json_response: bool = False
    stateful: bool = False
    # Stateful mode only: the 2024-11-05 HTTP+SSE transport; the event store (memory://, a Redis URL, or None
    # for none) and its bounds; the retry hint of priming events; this instance's name in its session ids.
    legacy_sse: bool = False
    event_store: str | None = None
    event_store_max_events: int = 1000
    event_store_max_age: int = 300
    sse_retry_ms: int = 1000
    instance_name: str | None = None
    audit_log: bool = True
    metrics: bool = True
    rate_limit: str | None = "600/minute"
    rate_limit_failed_auth: str = "60/minute"
    rate_limit_storage: str = "memory://"
    scope_claims: tuple[str, ...] = ("scope", "scp", "permissions")
    as_metadata_proxy: bool = False
    introspection_url: str | None = None
    introspection_client_id: str | None = None
    introspection_client_secret: str | None = None
    trusted_proxies: int = 0
    metrics_token: str | None = None
    metrics_dir: str | None = None
    workers: int = 1
    instance_path: str | None = None
    dev_token_lifetime: int = 600
    # Everything the settings were read from (the process environment over .env), for tool providers
    # to read their own variables from; it holds secrets, so it is never printed or compared.
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    dpop: DPoPMode = "allowed"
    dpop_algorithms: tuple[str, ...] = DEFAULT_DPOP_ALGORITHMS
    dpop_proof_window: int = 60
    dpop_nonce: bool = False
    # Per verified caller (issuer + subject); None: that cap is off. Counted per worker with memory://,
    # across workers with MCP_RATE_LIMIT_STORAGE=redis://. Sized for a 2-worker VM; the README (Security) says why.
    cap_in_flight: int | None = 32
    cap_streams: int | None = 8
    cap_sessions: int | None = 64
    # Seconds a standalone GET stream (stateful mode) stays open before it is ended; None: no limit.
    stream_lifetime: int | None = 1800
    dev_allow_remote: bool = False

    @property
    def issuer(self) -> str:
        """The first (usually the only) trusted issuer: the development issuer, the one documents name."""
        return self.issuers[0].issuer

    @property
    def jwks_uri(self) -> str | None:
        return self.issuers[0].jwks_uri

    @property
    def audiences(self) -> tuple[str, ...]:
        return self.issuers[0].audiences

    @property
    def endpoint_path(self) -> str:
        """The MCP endpoint's path: the path of the resource URL."""
        return urlsplit(self.resource_url).path.rstrip("/") or "/"

    @property
    def public_origin(self) -> str:
        return origin(self.resource_url)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        dotenv_path: str | os.PathLike[str] | None = ".env",
        workers: int | None = None,
        served: ServedAddress | None = None,
    ) -> Settings:
        """Read and validate the configuration.

        Variables set in the process environment win over the ``.env`` file.
        ``workers`` is the number of worker processes that will share this
        configuration (gunicorn passes its own count); ``served`` is where
        ``flask run`` listens, when it is the server loading the app.
        """
        env: dict[str, str] = {}
        if dotenv_path is not None and Path(dotenv_path).is_file():
            env.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
        env.update(os.environ if environ is None else environ)
        return cls.from_mapping(env, workers=workers, served=served)

    @classmethod
    def from_mapping(
        cls, env: Mapping[str, str], *, workers: int | None = None, served: ServedAddress | None = None
    ) -> Settings:
        """``env`` parsed one concern at a time, in this order; each parser takes its defaults from the fields."""
        dev = _boolean(env, "MCP_DEV", default=_DEFAULTS["dev"])
        if workers is None:
            workers = worker_count(env, default=_DEFAULTS["workers"])
        return cls(
            dev=dev,
            workers=workers,
            **_identity(env, dev, served),
            **_scopes(env, dev),
            allowed_origins=_allowed_origins(env),
            **_transport(env, dev, workers),
            **_observability(env),
            tools=_tool_providers(env),
            **_token_checks(env, dev),
            **_introspection(env),
            **_rate_limits(env),
            trusted_proxies=_integer(
                env, "MCP_TRUSTED_PROXIES", default=_DEFAULTS["trusted_proxies"], minimum=0, maximum=5
            ),
            instance_path=_absolute_path(env, "MCP_INSTANCE_PATH"),
            **_development(env, dev),
            **_dpop(env),
            **_caps(env),
            environ=MappingProxyType(dict(env)),
        )


# Each default is declared once, on its field above; the parsers take it from here. An unset variable of an
# optional or a list field (an issuer's JWKS URI, a secret, MCP_TOOLS) is None or empty, which is its field's
# default too.
_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {setting.name: setting.default for setting in fields(Settings) if setting.default is not MISSING}
)
# The values MCP_TOKEN_PROFILE and MCP_DPOP may take: the values of their Literal types.
_TOKEN_PROFILES: Mapping[str, TokenProfile] = {profile: profile for profile in get_args(TokenProfile)}
_DPOP_MODES: Mapping[str, DPoPMode] = {mode: mode for mode in get_args(DPoPMode)}


class _Identity(TypedDict):
    resource_url: str
    issuers: tuple[IssuerConfig, ...]
    authorization_servers: tuple[str, ...]
    resource_name: str


def _identity(env: Mapping[str, str], dev: bool, served: ServedAddress | None) -> _Identity:
    """Which resource this is (MCP_RESOURCE_URL), whose tokens it trusts, and where clients get them."""
    resource_url = _resource_url(env, dev, served)
    issuers: tuple[IssuerConfig, ...]
    if dev:
        issuers = (IssuerConfig(origin(resource_url) + DEV_ISSUER_PATH, None, _audiences(env, resource_url)),)
    else:
        issuers = _issuers(env, resource_url)
    scalekit = _scalekit_authorization_server(env, issuers[0].issuer)
    default_servers = (scalekit,) if scalekit is not None else tuple(i.issuer for i in issuers)
    return {
        "resource_url": resource_url,
        "issuers": issuers,
        "authorization_servers": _url_list(env, "MCP_AUTHORIZATION_SERVERS") or default_servers,
        "resource_name": _text(env, "MCP_RESOURCE_NAME") or _DEFAULTS["resource_name"],
    }


def _resource_url(env: Mapping[str, str], dev: bool, served: ServedAddress | None) -> str:
    """MCP_RESOURCE_URL: required, except in development mode, which serves loopback URLs and is its own issuer."""
    resource_url = _text(env, "MCP_RESOURCE_URL")
    if dev:
        resource_url = resource_url or _dev_resource_url(env, served)
        _check_url("MCP_RESOURCE_URL", resource_url)
        if not is_loopback_host(urlsplit(resource_url).hostname):
            raise SettingsError(
                "MCP_RESOURCE_URL",
                f"development mode (MCP_DEV=1) only serves loopback URLs, not {resource_url!r}",
            )
        if _text(env, "MCP_ISSUER"):
            raise SettingsError(
                "MCP_ISSUER",
                "must be unset in development mode: the server is its own issuer at "
                f"{origin(resource_url)}{DEV_ISSUER_PATH}",
            )
    else:
        if not resource_url:
            raise SettingsError(
                "MCP_RESOURCE_URL",
                "required: the public URL of the MCP endpoint, e.g. https://mcp.example.com/mcp "
                "(or set MCP_DEV=1 for local development)",
            )
        _check_url("MCP_RESOURCE_URL", resource_url)
    if urlsplit(resource_url).query or "#" in resource_url:
        raise SettingsError("MCP_RESOURCE_URL", "must not carry a query or a fragment (RFC 8707 section 2)")
    return resource_url


class _Scopes(TypedDict):
    scopes_supported: tuple[str, ...]
    scope_hierarchy: Mapping[str, frozenset[str]] | None
    advertise_required_scopes: bool
    scope_claims: tuple[str, ...]


def _scopes(env: Mapping[str, str], dev: bool) -> _Scopes:
    """The scopes advertised, which imply which, and the claims a token's scopes are read from."""
    supported = _scope_list(env, "MCP_SCOPES_SUPPORTED")
    if "offline_access" in supported:
        # MCP 2026-07-28, Refresh Tokens: servers SHOULD NOT advertise offline_access.
        raise SettingsError("MCP_SCOPES_SUPPORTED", "must not list offline_access (MCP authorization spec)")
    return {
        "scopes_supported": supported,
        "scope_hierarchy": _scope_hierarchy(env["MCP_SCOPE_HIERARCHY"]) if "MCP_SCOPE_HIERARCHY" in env else None,
        "advertise_required_scopes": dev and "MCP_SCOPES_SUPPORTED" not in env,
        "scope_claims": tuple(env.get("MCP_SCOPE_CLAIMS", "").replace(",", " ").split()) or _DEFAULTS["scope_claims"],
    }


def _allowed_origins(env: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(_origin_value("MCP_ALLOWED_ORIGINS", o) for o in _list(env, "MCP_ALLOWED_ORIGINS"))


class _StatefulOptions(TypedDict):
    legacy_sse: bool
    event_store: str | None
    event_store_max_events: int
    event_store_max_age: int
    sse_retry_ms: int
    instance_name: str | None


def _stateful_options(env: Mapping[str, str], stateful: bool) -> _StatefulOptions:
    """MCP_LEGACY_SSE, the event store and MCP_INSTANCE_NAME: what stateful mode adds to a session."""
    legacy_sse = _boolean(env, "MCP_LEGACY_SSE", default=_DEFAULTS["legacy_sse"])
    if legacy_sse and not stateful:
        raise SettingsError(
            "MCP_LEGACY_SSE",
            "needs stateful mode (MCP_STATEFUL=1): an HTTP+SSE session lives in the one process holding its stream",
        )
    event_store = _event_store(env, stateful)
    max_age = _integer(
        env, "MCP_EVENT_STORE_MAX_AGE", default=_DEFAULTS["event_store_max_age"], minimum=1, maximum=24 * 3600
    )
    retry = _integer(env, "MCP_SSE_RETRY_MS", default=_DEFAULTS["sse_retry_ms"], minimum=100, maximum=60_000)
    if retry >= max_age * 1000:
        raise SettingsError(
            "MCP_SSE_RETRY_MS",
            f"a client told to come back after {retry} ms would find its events gone "
            f"(MCP_EVENT_STORE_MAX_AGE={max_age} s): make it shorter",
        )
    name = _text(env, "MCP_INSTANCE_NAME") or None
    if name is not None and not _INSTANCE_NAME.fullmatch(name):
        raise SettingsError(
            "MCP_INSTANCE_NAME",
            f"{name!r} must be 1 to 32 lower-case letters, digits or inner hyphens, such as the port: 8000",
        )
    return {
        "legacy_sse": legacy_sse,
        "event_store": event_store,
        "event_store_max_events": _integer(
            env, "MCP_EVENT_STORE_MAX_EVENTS", default=_DEFAULTS["event_store_max_events"], minimum=1, maximum=100_000
        ),
        "event_store_max_age": max_age,
        "sse_retry_ms": retry,
        "instance_name": name,
    }


def _event_store(env: Mapping[str, str], stateful: bool) -> str | None:
    """MCP_EVENT_STORE: in stateful mode, memory:// unless told otherwise; stateless, there is none."""
    store = _text(env, "MCP_EVENT_STORE")
    if not stateful:
        if store:
            raise SettingsError(
                "MCP_EVENT_STORE", "needs stateful mode (MCP_STATEFUL=1): stateless requests have no stream to resume"
            )
        return None
    store = store or "memory://"
    scheme = store.partition("://")[0]
    if store.lower() == "off":
        return None
    if store == "memory://" or (scheme in ("redis", "rediss", "unix") and len(store) > len(scheme) + 3):
        return store
    raise SettingsError("MCP_EVENT_STORE", f"must be memory://, a redis:// URL or off, not {store!r}")


class _Transport(_StatefulOptions):
    stateful: bool
    json_response: bool
    state_secret: str | None


def _transport(env: Mapping[str, str], dev: bool, workers: int) -> _Transport:
    """Stateless or stateful (and what stateful mode adds), JSON or SSE, the secret that seals request state."""
    stateful = _boolean(env, "MCP_STATEFUL", default=_DEFAULTS["stateful"])
    if stateful and workers > 1:
        raise SettingsError(
            "MCP_STATEFUL",
            f"stateful mode keeps sessions in one process: run exactly one worker (MCP_WORKERS=1), not {workers}",
        )
    state_secret = _text(env, "MCP_STATE_SECRET") or None
    if state_secret is not None and len(state_secret) < 32:
        raise SettingsError("MCP_STATE_SECRET", "must be at least 32 characters (use a random value)")
    if state_secret is None and workers > 1 and not dev:
        raise SettingsError(
            "MCP_STATE_SECRET",
            f"required when {workers} worker processes run: every worker must seal request state with "
            "the same secret (make one: python -c 'import secrets; print(secrets.token_urlsafe(48))')",
        )
    return {
        "stateful": stateful,
        "json_response": _boolean(env, "MCP_JSON_RESPONSE", default=_DEFAULTS["json_response"]),
        "state_secret": state_secret,
        **_stateful_options(env, stateful),
    }


class _Observability(TypedDict):
    audit_log: bool
    metrics: bool
    metrics_token: str | None
    metrics_dir: str | None


def _observability(env: Mapping[str, str]) -> _Observability:
    """The audit log and the metrics: whether they are on, who may scrape, where worker processes share counts."""
    metrics_token = _text(env, "MCP_METRICS_TOKEN") or None
    if metrics_token is not None and (len(metrics_token) < 32 or not metrics_token.isprintable()):
        raise SettingsError("MCP_METRICS_TOKEN", "must be at least 32 printable characters (use a random value)")
    metrics_dir = _absolute_path(env, "PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir is not None and not os.path.isdir(metrics_dir):
        raise SettingsError("PROMETHEUS_MULTIPROC_DIR", f"{metrics_dir!r} is not a directory")
    return {
        "audit_log": _boolean(env, "MCP_AUDIT_LOG", default=_DEFAULTS["audit_log"]),
        "metrics": _boolean(env, "MCP_METRICS", default=_DEFAULTS["metrics"]),
        "metrics_token": metrics_token,
        "metrics_dir": metrics_dir,
    }


class _TokenChecks(TypedDict):
    token_profile: TokenProfile
    clock_leeway: int
    jwks_ttl: int
    jwks_refetch_cooldown: int
    as_metadata_proxy: bool


def _token_checks(env: Mapping[str, str], dev: bool) -> _TokenChecks:
    """How a JWT is judged (its profile, the clock leeway), how often keys are fetched, the metadata proxy."""
    profile = _text(env, "MCP_TOKEN_PROFILE") or _DEFAULTS["token_profile"]
    if profile not in _TOKEN_PROFILES:
        raise SettingsError("MCP_TOKEN_PROFILE", f"must be 'jwt' or 'rfc9068', not {profile!r}")
    as_metadata_proxy = _boolean(env, "MCP_AS_METADATA_PROXY", default=_DEFAULTS["as_metadata_proxy"])
    if as_metadata_proxy and dev:
        raise SettingsError("MCP_AS_METADATA_PROXY", "is for an upstream authorization server; not in development mode")
    return {
        "token_profile": _TOKEN_PROFILES[profile],
        "clock_leeway": _integer(env, "MCP_CLOCK_LEEWAY", default=_DEFAULTS["clock_leeway"], minimum=0, maximum=300),
        "jwks_ttl": _integer(env, "MCP_JWKS_TTL", default=_DEFAULTS["jwks_ttl"], minimum=60),
        "jwks_refetch_cooldown": _integer(
            env, "MCP_JWKS_REFETCH_COOLDOWN", default=_DEFAULTS["jwks_refetch_cooldown"], minimum=1, maximum=3600
        ),
        "as_metadata_proxy": as_metadata_proxy,
    }


class _RateLimits(TypedDict):
    rate_limit: str | None
    rate_limit_failed_auth: str
    rate_limit_storage: str


def _rate_limits(env: Mapping[str, str]) -> _RateLimits:
    """Requests per caller (``off``: neither limit), refused credentials per address, where both are counted."""
    per_caller = _text(env, "MCP_RATE_LIMIT") or _DEFAULTS["rate_limit"]
    return {
        "rate_limit": None if per_caller.lower() in ("off", "0") else _rate_limit("MCP_RATE_LIMIT", per_caller),
        "rate_limit_failed_auth": _rate_limit(
            "MCP_RATE_LIMIT_FAILED_AUTH",
            _text(env, "MCP_RATE_LIMIT_FAILED_AUTH") or _DEFAULTS["rate_limit_failed_auth"],
        ),
        "rate_limit_storage": _rate_limit_storage(env),
    }


class _Development(TypedDict):
    dev_token_lifetime: int
    dev_allow_remote: bool


def _development(env: Mapping[str, str], dev: bool) -> _Development:
    """Development mode's own authorization server: its tokens' lifetime; whether other machines may call."""
    allow_remote = _boolean(env, "MCP_DEV_ALLOW_REMOTE", default=_DEFAULTS["dev_allow_remote"])
    if allow_remote and not dev:
        raise SettingsError("MCP_DEV_ALLOW_REMOTE", "only applies to development mode (MCP_DEV=1)")
    return {
        "dev_token_lifetime": _integer(
            env, "MCP_DEV_TOKEN_LIFETIME", default=_DEFAULTS["dev_token_lifetime"], minimum=1, maximum=24 * 3600
        ),
        "dev_allow_remote": allow_remote,
    }


class _DPoP(TypedDict):
    dpop: DPoPMode
    dpop_algorithms: tuple[str, ...]
    dpop_proof_window: int
    dpop_nonce: bool


def _dpop(env: Mapping[str, str]) -> _DPoP:
    """RFC 9449 at this resource: off, allowed or required; the proofs' algorithms, age and nonces."""
    mode = env.get("MCP_DPOP", "").strip().lower() or _DEFAULTS["dpop"]
    if mode not in _DPOP_MODES:
        raise SettingsError("MCP_DPOP", f"must be off, allowed or required, not {mode!r}")
    algorithms = tuple(dict.fromkeys(env.get("MCP_DPOP_ALGORITHMS", "").replace(",", " ").split()))
    for name in algorithms:
        if name not in DPOP_ASYMMETRIC_ALGORITHMS:
            raise SettingsError(
                "MCP_DPOP_ALGORITHMS",
                f"{name!r} is not an asymmetric JWS algorithm (RFC 9449 section 4.2); choose from "
                + " ".join(sorted(DPOP_ASYMMETRIC_ALGORITHMS)),
            )
    return {
        "dpop": _DPOP_MODES[mode],
        "dpop_algorithms": algorithms or _DEFAULTS["dpop_algorithms"],
        "dpop_proof_window": _integer(
            env, "MCP_DPOP_PROOF_WINDOW", default=_DEFAULTS["dpop_proof_window"], minimum=5, maximum=600
        ),
        "dpop_nonce": _boolean(env, "MCP_DPOP_NONCE", default=_DEFAULTS["dpop_nonce"]),
    }


class _Caps(TypedDict):
    cap_in_flight: int | None
    cap_streams: int | None
    cap_sessions: int | None
    stream_lifetime: int | None


def _caps(env: Mapping[str, str]) -> _Caps:
    """What one caller may hold at once (app/principal_caps.py), and how long a standalone stream stays open."""
    return {
        "cap_in_flight": _cap(env, "MCP_CAP_IN_FLIGHT", _DEFAULTS["cap_in_flight"]),
        "cap_streams": _cap(env, "MCP_CAP_STREAMS", _DEFAULTS["cap_streams"]),
        "cap_sessions": _cap(env, "MCP_CAP_SESSIONS", _DEFAULTS["cap_sessions"]),
        "stream_lifetime": _cap(env, "MCP_STREAM_LIFETIME", _DEFAULTS["stream_lifetime"], maximum=24 * 3600),
    }


def worker_count(env: Mapping[str, str], *, default: int = DEFAULT_WORKERS) -> int:
    """MCP_WORKERS, the number of worker processes (gunicorn's default: :data:`DEFAULT_WORKERS`)."""
    return _integer(env, WORKERS_VARIABLE, default=default, minimum=1)


def _dev_resource_url(env: Mapping[str, str], served: ServedAddress | None) -> str:
    """Development mode without MCP_RESOURCE_URL: the address ``flask run`` serves, so every URL names its port.

    ``flask run --port`` is known while the app loads (``served``); other commands
    (``flask mcp token``) find the same port in FLASK_RUN_PORT, the variable
    ``flask run`` itself reads its port from.
    """
    if served is None:
        raw = env.get("FLASK_RUN_PORT", "").strip()
        if not raw:
            return DEV_RESOURCE_URL
        served = ServedAddress("127.0.0.1", _integer(env, "FLASK_RUN_PORT", default=DEV_PORT, minimum=1, maximum=65535))
    if served.port == 0:
        raise SettingsError(
            "MCP_RESOURCE_URL",
            "flask run --port 0 listens on a port chosen at random, which clients cannot be told: "
            "give a port, or set MCP_RESOURCE_URL",
        )
    # Bound to every interface (0.0.0.0, as in a container) the server still answers loopback hosts only.
    host = served.host if is_loopback_host(served.host) else "127.0.0.1"
    if ":" in host:
        host = f"[{host.strip('[]')}]"
    return f"{'https' if served.https else 'http'}://{host}:{served.port}/mcp"


def _tool_providers(env: Mapping[str, str]) -> tuple[str, ...]:
    """MCP_TOOLS: import paths of tool providers, ``package.module:function``, comma-separated."""
    providers = _list(env, "MCP_TOOLS")
    for provider in providers:
        if not _PROVIDER.fullmatch(provider):
            raise SettingsError(
                "MCP_TOOLS", f"{provider!r} is not an import path like package.module:function (comma-separated)"
            )
        if providers.count(provider) > 1:
            raise SettingsError("MCP_TOOLS", f"lists {provider!r} twice")
    return providers


def _audiences(env: Mapping[str, str], resource_url: str) -> tuple[str, ...]:
    return _url_list(env, "MCP_AUDIENCE", allow_non_url=True) or (resource_url,)


def _issuers(env: Mapping[str, str], resource_url: str) -> tuple[IssuerConfig, ...]:
    """The trusted issuers: MCP_ISSUERS (JSON), MCP_ISSUER (a comma list), or the Scalekit preset."""
    as_json = env.get("MCP_ISSUERS", "").strip()
    listed = _list(env, "MCP_ISSUER")
    scalekit = env.get("SCALEKIT_ENVIRONMENT_URL", "").strip()
    if as_json:
        if listed:
            raise SettingsError("MCP_ISSUERS", "set either MCP_ISSUERS or MCP_ISSUER, not both")
        return _issuers_from_json(as_json)
    if not listed and scalekit:
        return (_scalekit_issuer(env, scalekit, resource_url),)
    if not listed:
        raise SettingsError(
            "MCP_ISSUER",
            "required: the issuer URL of your authorization server, exactly as it appears "
            "in the tokens' iss claim (or set MCP_DEV=1 for local development)",
        )
    for issuer in listed:
        _check_url("MCP_ISSUER", issuer)
    jwks_uris = [uri.strip() for uri in env.get("MCP_JWKS_URI", "").split(",")] if env.get("MCP_JWKS_URI") else []
    if jwks_uris and len(jwks_uris) != len(listed):
        raise SettingsError(
            "MCP_JWKS_URI",
            f"lists {len(jwks_uris)} URLs for {len(listed)} issuers: give one per issuer, in the same order "
            "(leave an entry empty to discover it)",
        )
    for uri in jwks_uris:
        if uri:
            _check_url("MCP_JWKS_URI", uri)
    audiences = _audiences(env, resource_url)
    return tuple(
        IssuerConfig(issuer, (jwks_uris[n] or None) if jwks_uris else None, audiences)
        for n, issuer in enumerate(listed)
    )


def _issuers_from_json(value: str) -> tuple[IssuerConfig, ...]:
    try:
        entries = json.loads(value)
    except ValueError:
        raise SettingsError("MCP_ISSUERS", "is not valid JSON") from None
    if not isinstance(entries, list) or not entries:
        raise SettingsError("MCP_ISSUERS", 'must be a JSON list like [{"issuer": "https://...", "audience": "..."}]')
    issuers = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("issuer"), str):
            raise SettingsError("MCP_ISSUERS", 'every entry needs an "issuer" string')
        unknown = set(entry) - {"issuer", "jwks_uri", "audience"}
        if unknown:
            raise SettingsError("MCP_ISSUERS", f"unknown field(s) {sorted(unknown)} in the entry for {entry['issuer']}")
        _check_url("MCP_ISSUERS", entry["issuer"])
        jwks_uri = entry.get("jwks_uri")
        if jwks_uri is not None:
            if not isinstance(jwks_uri, str):
                raise SettingsError("MCP_ISSUERS", f'"jwks_uri" of {entry["issuer"]} must be a string')
            _check_url("MCP_ISSUERS", jwks_uri)
        audience = entry.get("audience")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or not audiences or not all(isinstance(a, str) and a for a in audiences):
            raise SettingsError("MCP_ISSUERS", f'"audience" of {entry["issuer"]} must be a string or a list of them')
        issuers.append(IssuerConfig(entry["issuer"], jwks_uri, tuple(audiences)))
    return tuple(issuers)


def _scalekit_issuer(env: Mapping[str, str], environment_url: str, resource_url: str) -> IssuerConfig:
    """Scalekit: tokens are issued by the environment, signed with its /keys, for the resource ID."""
    _check_url("SCALEKIT_ENVIRONMENT_URL", environment_url)
    resource_id = env.get("SCALEKIT_RESOURCE_ID", "").strip()
    if not resource_id:
        raise SettingsError(
            "SCALEKIT_RESOURCE_ID", "required with SCALEKIT_ENVIRONMENT_URL: the MCP server's res_... ID"
        )
    issuer = environment_url.rstrip("/")
    audiences = _url_list(env, "MCP_AUDIENCE", allow_non_url=True) or (resource_id, resource_url)
    return IssuerConfig(issuer, env.get("MCP_JWKS_URI", "").strip() or f"{issuer}/keys", audiences)


def _scalekit_authorization_server(env: Mapping[str, str], issuer: str) -> str | None:
    """Scalekit: the authorization server clients are sent to is the resource's own, under the environment."""
    resource_id = env.get("SCALEKIT_RESOURCE_ID", "").strip()
    if not resource_id or env.get("MCP_ISSUER", "").strip():
        return None
    return f"{issuer.rstrip('/')}/resources/{resource_id}"


def _check_url(variable: str, url: str) -> None:
    problem = url_problem(url)
    if problem is not None:
        raise SettingsError(variable, problem)


def _list(env: Mapping[str, str], variable: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(variable, "").split(",") if item.strip())


def _url_list(env: Mapping[str, str], variable: str, *, allow_non_url: bool = False) -> tuple[str, ...]:
    items = _list(env, variable)
    for item in items:
        # Audiences may be opaque identifiers (an Entra application ID URI or GUID).
        if allow_non_url and not item.lower().startswith(("http://", "https://")):
            continue
        _check_url(variable, item)
    return items


def _scope_list(env: Mapping[str, str], variable: str) -> tuple[str, ...]:
    scopes = tuple(s for s in env.get(variable, "").replace(",", " ").split() if s)
    for scope in scopes:
        _check_scope_token(variable, scope)
    return scopes


def is_scope_token(scope: str) -> bool:
    # RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
    return bool(scope) and all(c == "\x21" or "\x23" <= c <= "\x5b" or "\x5d" <= c <= "\x7e" for c in scope)


def _check_scope_token(variable: str, scope: str) -> None:
    if not is_scope_token(scope):
        raise SettingsError(variable, f"{scope!r} is not a valid scope token (RFC 6749 section 3.3)")


def _scope_hierarchy(value: str) -> dict[str, frozenset[str]]:
    """Parse ``broad=narrow1 narrow2; other=...`` into a map of implied scopes."""
    hierarchy: dict[str, frozenset[str]] = {}
    for entry in value.replace(";", ",").split(","):
        if not entry.strip():
            continue
        broad, sep, narrow = entry.partition("=")
        broad = broad.strip()
        implied = narrow.split()
        if not sep or not broad or not implied:
            raise SettingsError(
                "MCP_SCOPE_HIERARCHY",
                f"entry {entry.strip()!r} must look like 'broad=narrow1 narrow2' (entries separated by ';')",
            )
        for scope in (broad, *implied):
            _check_scope_token("MCP_SCOPE_HIERARCHY", scope)
        hierarchy[broad] = hierarchy.get(broad, frozenset()) | frozenset(implied)
    return hierarchy


def _origin_value(variable: str, origin: str) -> str:
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise SettingsError(variable, f"{origin!r} is not an origin like https://app.example.com")
    return f"{parts.scheme}://{parts.netloc}".lower()


class _IntrospectionOptions(TypedDict, total=False):
    introspection_url: str
    introspection_client_id: str
    introspection_client_secret: str


def _introspection(env: Mapping[str, str]) -> _IntrospectionOptions:
    url = env.get("MCP_INTROSPECTION_URL", "").strip()
    if not url:
        return {}
    _check_url("MCP_INTROSPECTION_URL", url)
    client_id = env.get("MCP_INTROSPECTION_CLIENT_ID", "").strip()
    client_secret = env.get("MCP_INTROSPECTION_CLIENT_SECRET", "").strip()
    for variable, value in (
        ("MCP_INTROSPECTION_CLIENT_ID", client_id),
        ("MCP_INTROSPECTION_CLIENT_SECRET", client_secret),
    ):
        if not value:
            raise SettingsError(variable, "required with MCP_INTROSPECTION_URL: the server's own client credentials")
    return {
        "introspection_url": url,
        "introspection_client_id": client_id,
        "introspection_client_secret": client_secret,
    }


def _rate_limit(variable: str, value: str) -> str:
    """A rate limit such as ``120/minute;2000/hour`` (the ``limits`` syntax)."""
    try:
        items = parse_many(value)
    except ValueError:
        items = []
    if not items:
        raise SettingsError(variable, f"{value!r} is not a rate limit like '120/minute;2000/hour'")
    return value


def _cap(env: Mapping[str, str], variable: str, default: int, *, maximum: int = 100_000) -> int | None:
    """A per-caller cap: a whole number, or ``off`` for none."""
    if env.get(variable, "").strip().lower() == "off":
        return None
    try:
        return _integer(env, variable, default=default, minimum=1, maximum=maximum)
    except SettingsError as error:
        raise SettingsError(variable, f"{error.problem} (or off)") from None


def _rate_limit_storage(env: Mapping[str, str]) -> str:
    value = _text(env, "MCP_RATE_LIMIT_STORAGE") or _DEFAULTS["rate_limit_storage"]
    scheme = value.partition("://")[0]
    if scheme not in ("memory", "redis", "rediss", "redis+sentinel", "redis+cluster", "valkey", "valkeys"):
        raise SettingsError("MCP_RATE_LIMIT_STORAGE", f"must be memory:// or a redis:// URL, not {value!r}")
    return value


def _absolute_path(env: Mapping[str, str], variable: str) -> str | None:
    value = env.get(variable, "").strip()
    if value and not os.path.isabs(value):
        raise SettingsError(variable, f"must be an absolute path, not {value!r}")
    return value or None


def _text(env: Mapping[str, str], variable: str) -> str:
    return env.get(variable, "").strip()


def _boolean(env: Mapping[str, str], variable: str, *, default: bool) -> bool:
    value = env.get(variable, "").strip().lower()
    if not value:
        return default
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(variable, f"must be 1 or 0, not {value!r}")


def _integer(env: Mapping[str, str], variable: str, *, default: int, minimum: int, maximum: int | None = None) -> int:
    raw = env.get(variable, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(variable, f"must be a whole number, not {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise SettingsError(variable, f"must be {bounds}, not {value}")
    return value
