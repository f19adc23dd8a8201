"""The private and undocumented attributes of dependencies this app relies on, each checked by name.

None of these is covered by a dependency's compatibility promise, and
constraints.txt pins ranges, not exact versions: when an upgrade removes or
reshapes one, this test says which attribute, who uses it and what to do,
instead of a failure deep inside a request.
"""

from __future__ import annotations

import threading

import flask
import pytest
from limits.storage import MemoryStorage
from mcp.server.lowlevel.server import Server
from mcp.server.mcpserver import MCPServer


def test_mcpserver_keeps_its_lowlevel_server() -> None:
    server = MCPServer("internals")
    lowlevel = getattr(server, "_lowlevel_server", None)
    assert isinstance(lowlevel, Server), (
        "mcp: MCPServer._lowlevel_server is gone or no longer a lowlevel Server; app.bridge hands it to "
        "StreamableHTTPSessionManager(app=...) and app.mcp_server reads it: find its new name in the SDK"
    )


@pytest.mark.parametrize("name", ["request", "g"])
def test_flask_proxies_can_be_unwrapped_once(name: str) -> None:
    proxy = getattr(flask, name)
    assert callable(getattr(proxy, "_get_current_object", None)), (
        f"werkzeug: flask.{name}._get_current_object is gone; the hooks (app.auth, app.audit, app.metrics, "
        "app.transport_security, app.cors) unwrap the proxies once per request with it"
    )
    app = flask.Flask(__name__)
    with app.test_request_context("/"):
        assert not isinstance(proxy._get_current_object(), type(proxy))


def test_limits_memory_storage_keeps_its_counters_and_timer() -> None:
    storage = MemoryStorage()
    try:
        missing = [
            attribute
            for attribute, kind in (
                ("timer", threading.Timer),
                ("expirations", dict),
                ("storage", dict),
                ("locks", dict),
            )
            if not isinstance(getattr(storage, attribute, None), kind)
        ]
        assert missing == [], (
            f"limits: MemoryStorage no longer has {missing}; app.rate_limits.TimerlessMemoryStorage cancels its "
            "timer and keeps its counters in these: rewrite it against the new storage"
        )
    finally:
        timer = getattr(storage, "timer", None)
        if timer is not None:
            timer.cancel()


def test_gunicorn_logger_keeps_get_user() -> None:
    from gunicorn.glogging import Logger

    assert callable(getattr(Logger, "_get_user", None)), (
        "gunicorn: glogging.Logger._get_user is gone; app.serving.access_log.AccessLogger computes the %(u)s "
        "atom with it: copy gunicorn's new definition of that atom"
    )


def test_gunicorn_wsgi_early_hints_callback_is_looked_up_by_name() -> None:
    from gunicorn.http import wsgi

    assert callable(getattr(wsgi, "_make_early_hints_callback", None)), (
        "gunicorn: http.wsgi._make_early_hints_callback is gone; app.serving.http11 gives the short path's "
        "environ gunicorn's 103 Early Hints callback with it (and silently offers none without it)"
    )


def test_logging_formatter_keeps_its_format_string() -> None:
    import logging

    assert logging.Formatter("%(message)s")._fmt == "%(message)s", (
        "logging: Formatter._fmt is gone; app.log_lines.plain_handler reads it to know a handler writes the "
        "message alone"
    )


def test_threading_register_atexit_exists() -> None:
    assert callable(getattr(threading, "_register_atexit", None)), (
        "threading: _register_atexit is gone; app.bridge.event_loop closes its loops with it before the "
        "interpreter joins non-daemon threads (and silently does not without it)"
    )


def test_sse_starlette_shutdown_state_has_watcher_flag() -> None:
    import sse_starlette.sse

    state = getattr(sse_starlette.sse, "_get_shutdown_state", None)
    assert callable(state), (
        "sse-starlette: sse._get_shutdown_state is gone; app.bridge.event_loop marks its shutdown watcher "
        "started with it so that no loop polls for uvicorn's shutdown forever"
    )
    assert hasattr(state(), "watcher_started"), (
        "sse-starlette: the shutdown state has no watcher_started; app.bridge.event_loop sets it"
    )


def test_json_encoder_keeps_its_ascii_string_quoter() -> None:
    import json.encoder

    assert json.encoder.encode_basestring_ascii('a"\u00e9') == '"a\\"\\u00e9"', (
        "json: encoder.encode_basestring_ascii is gone or changed; app.audit quotes strings with it"
    )


def test_prometheus_histogram_children_keep_their_buckets_and_sum() -> None:
    from prometheus_client import CollectorRegistry
    from prometheus_client import Histogram

    histogram = Histogram("internals_seconds", "internals", ["tool"], buckets=(0.1, 1.0), registry=CollectorRegistry())
    child = histogram.labels("t")
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    assert bounds == [0.1, 1.0, float("inf")] and isinstance(buckets, list) and len(buckets) == 3, (
        "prometheus_client: a Histogram child no longer keeps _upper_bounds and one _buckets value per bound; "
        "app.metrics.Tallies adds a batch of observations to them: rewrite its flush against the new layout"
    )
    assert all(callable(getattr(value, "inc", None)) for value in [*buckets, total]), (
        "prometheus_client: a Histogram child's _buckets or _sum values have no inc(); app.metrics.Tallies "
        "writes batches of observations with it"
    )
