"""What the features do as a response leaves: one ``after_request`` hook and one close callback for all of them.

The audit line, the metrics and the per-caller caps each act after the view
(a request id header, a count) and once the WSGI server has closed the
response, after its last byte (the audit line and the tool-call duration time
a stream to its end; the caps give the caller's count back). As separate
``after_request`` hooks each one cost a hook dispatch, two context lookups
and a ``call_on_close`` per request, several microseconds together on a
request of about a millisecond. Here they share one of each.

A finisher is called with the response, the request and ``flask.g`` (already
unwrapped from their proxies) and returns what to run once the response is
closed, or None. Finishers run in the reverse order of their registration,
as Flask runs ``after_request`` hooks, and their close callbacks in the order
the finishers returned them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from flask import Request
from flask import Response
from flask import g
from flask import request

Closer = Callable[[], object]
Finisher = Callable[[Response, Request, Any], Closer | None]

_EXTENSION = "mcp_request_end"


class RequestEnd:
    """The one ``after_request`` hook of the features; see the module docstring."""

    def __init__(self) -> None:
        self.finishers: list[Finisher] = []

    def __call__(self, response: Response) -> Response:
        req = request._get_current_object()  # type: ignore[attr-defined]  # Flask types the proxy as a Request
        ctx = g._get_current_object()
        closers: list[Closer] | None = None
        for finish in self.finishers:
            closer = finish(response, req, ctx)
            if closer is not None:
                if closers is None:
                    closers = [closer]
                else:
                    closers.append(closer)
        if closers is not None:
            response.call_on_close(closers[0] if len(closers) == 1 else _all_of(closers))
        return response


def _all_of(closers: list[Closer]) -> Closer:
    def close_all() -> None:
        for close in closers:
            close()

    return close_all


def on_response(app: Flask, finish: Finisher) -> None:
    """Run ``finish`` after the view of every request; the hook is registered by the first call."""
    end = app.extensions.get(_EXTENSION)
    if end is None:
        end = app.extensions[_EXTENSION] = RequestEnd()
        app.after_request(end)
    end.finishers.insert(0, finish)
