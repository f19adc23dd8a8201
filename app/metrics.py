"""Prometheus metrics at ``/metrics``: MCP requests, authentication refusals, cap refusals, tool durations, key fetches.

Several gunicorn workers are several processes, and a scrape reaches one of
them. prometheus_client's multiprocess mode makes every worker write its
samples to files in ``PROMETHEUS_MULTIPROC_DIR`` and the scraped worker adds
them all up; the variable must be in the process environment before
prometheus_client is imported (gunicorn.conf.py sets it), and gunicorn's
``child_exit`` hook marks dead workers. Without it (``flask run``, a WSGI host)
each process reports only itself.

Label values are bounded: a JSON-RPC method this server does not know is
``other``, a tool that is not registered is ``other``, and ``-`` means the
request named none (or was refused before its body was read: an
unauthenticated caller must not make the server parse 4 MiB of JSON for a
label).

``/metrics`` is never public. With ``MCP_METRICS_TOKEN`` set, a scrape must
carry ``Authorization: Bearer <that token>``. Without it, only direct loopback
requests are served: the peer address is a loopback address and the request
carries no ``X-Forwarded-For``, ``X-Real-IP`` or ``Forwarded`` header. Behind
nginx every request comes from 127.0.0.1, but nginx adds ``X-Forwarded-For``
to everything it proxies, so a request from the internet is refused even when
``MCP_TRUSTED_PROXIES`` is 0 (and the shipped nginx site refuses ``/metrics``
itself as well).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable
from typing import Any

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import g
from flask import request
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import REGISTRY
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Histogram
from prometheus_client import generate_latest
from prometheus_client import values
from prometheus_client.multiprocess import MultiProcessCollector
from werkzeug.exceptions import HTTPException

from app.auth import public
from app.errors import Forbidden
from app.errors import JSONError
from app.mcp_request import current_mcp_request
from app.settings import Settings
from app.settings import SettingsError
from app.settings import is_loopback_host

# Methods a client sends to a server (MCP 2025-11-25 and 2026-07-28); anything else is "other".
KNOWN_METHODS = frozenset(
    {
        "completion/complete",
        "initialize",
        "logging/setLevel",
        "notifications/cancelled",
        "notifications/initialized",
        "notifications/progress",
        "notifications/roots/list_changed",
        "ping",
        "prompts/get",
        "prompts/list",
        "resources/list",
        "resources/read",
        "resources/subscribe",
        "resources/templates/list",
        "resources/unsubscribe",
        "server/discover",
        "subscriptions/listen",
        "tasks/cancel",
        "tasks/get",
        "tasks/list",
        "tasks/result",
        "tools/call",
        "tools/list",
    }
)
NONE = "-"
OTHER = "other"
FORWARDING_HEADERS = ("X-Forwarded-For", "X-Real-IP", "Forwarded")

REQUESTS = Counter(
    "mcp_requests",
    "Requests to the MCP endpoint by JSON-RPC method, called tool and HTTP status.",
    ["method", "tool", "status"],
)
AUTH_FAILURES = Counter(
    "mcp_auth_failures",
    "Requests refused by authentication, by reason: the RFC 6750 error code, no_token, keys_unavailable"
    " or introspection_unavailable.",
    ["reason"],
)
TOOL_DURATION = Histogram(
    "mcp_tool_call_duration_seconds",
    "Duration of tools/call requests that reached the tool, until the last byte of the answer (streams included).",
    ["tool"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
JWKS_FETCHES = Counter(
    "mcp_jwks_fetches",
    "Fetches of the authorization server's signing keys, by outcome (ok or error).",
    ["outcome"],
)


CAP_REFUSALS = Counter(
    "mcp_cap_refusals",
    "Requests refused because their caller already held as much as a per-caller cap allows, by cap "
    "(in_flight, streams, sessions).",
    ["cap"],
)


def count_cap_refusal(cap: str) -> None:
    CAP_REFUSALS.labels(cap).inc()


def count_auth_failure(reason: str) -> None:
    AUTH_FAILURES.labels(reason).inc()


def count_jwks_fetch(outcome: str) -> None:
    JWKS_FETCHES.labels(outcome).inc()


def multiprocess_mode() -> bool:
    """Whether prometheus_client writes to PROMETHEUS_MULTIPROC_DIR (decided when it was imported)."""
    return values.ValueClass is not values.MutexValue


class RequestMetrics:
    """Counts MCP endpoint requests and times tool calls; the label sets are fixed at start."""

    def __init__(self, known_tools: Iterable[str], mcp_endpoint: str = "mcp") -> None:
        self._tools = frozenset(known_tools)
        self._mcp_endpoint = mcp_endpoint
        # Label children, looked up once per label set: every value is bounded (see the module docstring).
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._durations: dict[str, Any] = {}

    def _requests_child(self, method: str, tool: str, status: int) -> Any:
        child = self._requests.get((method, tool, status))
        if child is None:
            child = self._requests[(method, tool, status)] = REQUESTS.labels(method, tool, str(status))
        return child

    def _duration_child(self, tool: str) -> Any:
        child = self._durations.get(tool)
        if child is None:
            child = self._durations[tool] = TOOL_DURATION.labels(tool)
        return child

    def labels(self, ctx: Any = None) -> tuple[str, str]:
        """Method and tool of this request, from the body parse the authentication hook already made."""
        if ctx is None:
            ctx = g._get_current_object()
        if "principal" not in ctx:
            return NONE, NONE
        parsed = ctx.get("mcp_request")
        try:
            calls = (parsed if parsed is not None else current_mcp_request()).calls
        except HTTPException:  # the body itself was refused (413): it names nothing
            return NONE, NONE
        if not calls:
            return NONE, NONE
        if len(calls) > 1:
            return "batch", NONE
        call = calls[0]
        method = call.method if call.method in KNOWN_METHODS else OTHER
        if method != "tools/call":
            return method, NONE
        return method, call.target if call.target in self._tools else OTHER

    def finish(self, response: Response) -> Response:
        if request._get_current_object().endpoint != self._mcp_endpoint:  # type: ignore[attr-defined]
            return response
        ctx = g._get_current_object()
        method, tool = self.labels(ctx)
        status = response.status_code
        child = self._requests.get((method, tool, status))
        if child is None:
            child = self._requests_child(method, tool, status)
        child.inc()
        started = ctx.get("request_started")  # set by app.audit.RequestGlobals as the request began
        if method == "tools/call" and status == 200 and started is not None:
            histogram = self._duration_child(tool)

            def observe() -> None:
                histogram.observe(time.perf_counter() - started)

            # The WSGI server closes the body after its last byte, so a streamed call is timed to its end.
            response.call_on_close(observe)
        return response


class MetricsTokenRequired(JSONError):
    """RFC 6750 section 3.1 ``invalid_token`` for a scrape without MCP_METRICS_TOKEN, in the ``metrics`` realm."""

    status_code = 401
    error = "invalid_token"
    fixed_headers = (("WWW-Authenticate", 'Bearer realm="metrics"'), ("Cache-Control", "no-store"))


class MetricsEndpoint:
    """The ``/metrics`` view and its access rule."""

    def __init__(self, settings: Settings) -> None:
        self._token = settings.metrics_token.encode() if settings.metrics_token else None
        self._directory = settings.metrics_dir if multiprocess_mode() else None

    def allowed(self) -> Response | None:
        """None when the scrape may proceed, else the refusal."""
        if self._token is not None:
            header = request.headers.get("Authorization", "")
            scheme, _, presented = header.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), self._token):
                return None
            return MetricsTokenRequired("Metrics require the bearer token configured in MCP_METRICS_TOKEN").response()
        forwarded = any(name in request.headers for name in FORWARDING_HEADERS)
        if forwarded or not is_loopback_host(request.remote_addr):
            return Forbidden(
                "forbidden",
                "Metrics are served only to direct loopback requests, or with MCP_METRICS_TOKEN",
                headers=[("Cache-Control", "no-store")],
            ).response()
        return None

    def view(self) -> Response:
        refusal = self.allowed()
        if refusal is not None:
            return refusal
        if self._directory is not None:
            # A fresh registry per scrape, as prometheus_client's multiprocess docs require.
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self._directory)  # type: ignore[no-untyped-call]  # unannotated
            data = generate_latest(registry)
        else:
            data = generate_latest(REGISTRY)
        return Response(data, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})


def init_app(app: Flask, settings: Settings, known_tools: Iterable[str]) -> None:
    """Register the request counters and ``/metrics``; tool calls are timed from app.audit's start of the request."""
    if settings.metrics_dir is not None and not multiprocess_mode():
        raise SettingsError(
            "PROMETHEUS_MULTIPROC_DIR",
            "must be set in the process environment before the server starts (gunicorn.conf.py does that), "
            "not only in .env",
        )
    metrics = RequestMetrics(known_tools)
    app.after_request(metrics.finish)
    endpoint = MetricsEndpoint(settings)
    blueprint = Blueprint("metrics", __name__)

    @blueprint.get("/metrics")
    @public  # not an OAuth-protected view: MetricsEndpoint applies its own rule
    def metrics_view() -> Response:
        return endpoint.view()

    app.register_blueprint(blueprint)
