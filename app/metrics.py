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

The request counters and the tool-call histogram are counted in memory and
written to prometheus_client's values once a second (:class:`Tallies`): in
multiprocess mode every increment is a locked write to a memory-mapped file,
about 10 microseconds a request for the counter and the histogram together,
which dwarfs a dictionary update. A scrape writes its own worker's tallies
first; another worker's reach the files within ``FLUSH_INTERVAL``, and a
worker killed with SIGKILL loses at most that last second of counts.
"""

from __future__ import annotations

import atexit
import bisect
import hmac
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from flask import Blueprint
from flask import Flask
from flask import Request
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

from app import request_end
from app.auth import public
from app.errors import Forbidden
from app.errors import JSONError
from app.mcp_request import current_mcp_request
from app.request_end import Closer
from app.settings import Settings
from app.settings import SettingsError
from app.urls import is_loopback_host

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


FLUSH_INTERVAL = 1.0


class Tallies:
    """Counter and histogram increments kept in memory, written to their prometheus_client values in batches.

    A counter child's count is added with one ``inc(n)``; a histogram child's
    observations with one ``inc`` per bucket that received any and one for
    their sum, to the same ``_buckets`` and ``_sum`` values its ``observe``
    writes (tests/test_dependency_internals.py checks they are still there). A
    daemon thread, started in each process once it counts, writes them once every
    ``FLUSH_INTERVAL`` seconds; a scrape and the process's exit write them at
    once.
    """

    def __init__(self, interval: float = FLUSH_INTERVAL) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._counts: dict[Any, int] = {}
        self._observed: dict[Any, tuple[list[float], list[int]]] = {}
        self._flusher_started = False
        atexit.register(self.flush)
        os.register_at_fork(after_in_child=self._forget_parent)

    def count(self, child: Any) -> None:
        with self._lock:
            self._counts[child] = self._counts.get(child, 0) + 1
        if not self._flusher_started:
            self._start_flusher()

    def observe(self, child: Any, amount: float) -> None:
        bounds = child._upper_bounds
        with self._lock:
            entry = self._observed.get(child)
            if entry is None:
                entry = self._observed[child] = ([0.0], [0] * len(bounds))
            entry[0][0] += amount
            # The first bucket whose upper bound is at least the amount, as Histogram.observe picks it.
            entry[1][bisect.bisect_left(bounds, amount)] += 1

    def flush(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, {}
            observed, self._observed = self._observed, {}
        for child, count in counts.items():
            child.inc(count)
        for child, (total, buckets) in observed.items():
            child._sum.inc(total[0])
            for index, count in enumerate(buckets):
                if count:
                    child._buckets[index].inc(count)

    def _start_flusher(self) -> None:
        with self._lock:
            if self._flusher_started:
                return
            self._flusher_started = True
        threading.Thread(target=self._flush_forever, name="mcp-metrics-flush", daemon=True).start()

    def _forget_parent(self) -> None:
        # A forked worker: its parent's flusher thread did not come along, and what the parent had
        # not written yet is the parent's to write.
        self._lock = threading.Lock()
        self._counts, self._observed = {}, {}
        self._flusher_started = False

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self._interval)
            self.flush()


tallies = Tallies()


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

    def __init__(self, known_tools: Iterable[str], mcp_endpoint: str = "mcp", counts: Tallies = tallies) -> None:
        self._counts = counts
        self._tools = frozenset(known_tools)
        self._mcp_endpoint = mcp_endpoint
        # Label children, looked up once per label set: every value is bounded (see the module docstring).
        # (method, tool, status) -> the request counter's child and, for a tool call answered 200, the duration's.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _children_of(self, method: str, tool: str, status: int) -> tuple[Any, Any]:
        """The request counter's child of this label set, and the duration histogram's if the call is timed."""
        counter = REQUESTS.labels(method, tool, str(status))
        timed = method == "tools/call" and status == 200
        histogram = TOOL_DURATION.labels(tool) if timed else None
        children = self._children[(method, tool, status)] = (counter, histogram)
        return children

    def labels(self, ctx: Any = None) -> tuple[str, str]:
        """Method and tool of this request, from the body parse the authentication hook already made."""
        if ctx is None:
            ctx = g._get_current_object()
        found = ctx.__dict__  # flask.g's own __contains__ and get are Python calls; its __dict__'s are not
        if "principal" not in found:
            return NONE, NONE
        parsed = found.get("mcp_request")
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

    def finish(self, response: Response, req: Request, ctx: Any) -> Closer | None:
        if req.endpoint != self._mcp_endpoint:
            return None
        method, tool = self.labels(ctx)
        status = response.status_code
        children = self._children.get((method, tool, status))
        if children is None:
            children = self._children_of(method, tool, status)
        counts = self._counts
        counts.count(children[0])
        histogram = children[1]
        started = ctx.__dict__.get("request_started")  # set by app.audit.RequestGlobals as the request began
        if histogram is None or started is None:
            return None

        # The WSGI server closes the body after its last byte, so a streamed call is timed to its end.
        return lambda: counts.observe(histogram, time.perf_counter() - started)


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
                "Metrics are served only to direct loopback requests, or with MCP_METRICS_TOKEN",
                headers=[("Cache-Control", "no-store")],
            ).response()
        return None

    def view(self) -> Response:
        refusal = self.allowed()
        if refusal is not None:
            return refusal
        tallies.flush()  # this worker's counts up to this request; the others' are at most FLUSH_INTERVAL old
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
    request_end.on_response(app, metrics.finish)
    endpoint = MetricsEndpoint(settings)
    blueprint = Blueprint("metrics", __name__)

    @blueprint.get("/metrics")
    @public  # not an OAuth-protected view: MetricsEndpoint applies its own rule
    def metrics_view() -> Response:
        return endpoint.view()

    app.register_blueprint(blueprint)
