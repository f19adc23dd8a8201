"""A WSGI app for the worker tests: answers with what it was given, or in the shape a path asks for.

``gunicorn -k <worker> tests.serving.echo_app:app``. Served both by our worker and by
gunicorn's own gthread worker, so the tests can compare the two byte for byte.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

# The environ keys a WSGI app may rely on (server-specific extensions and objects left out).
_COMPARED = (
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "RAW_URI",
    "SERVER_PROTOCOL",
    "SERVER_NAME",
    "SERVER_PORT",
    "REMOTE_ADDR",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "wsgi.url_scheme",
    "wsgi.multithread",
    "wsgi.multiprocess",
    "wsgi.run_once",
    "wsgi.version",
    "wsgi.input_terminated",
)

StartResponse = Callable[..., Any]


def environ_view(environ: dict[str, Any], body: bytes) -> dict[str, Any]:
    view = {key: environ.get(key) for key in _COMPARED}
    view.update({key: value for key, value in environ.items() if key.startswith("HTTP_")})
    view["body"] = body.decode("latin-1")
    view["has_socket"] = "gunicorn.socket" in environ
    return view


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _stream(int(environ.get("QUERY_STRING") or "3"))
    if path == "/empty-first":
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return _empty_first()
    if path == "/no-content":
        start_response("204 No Content", [])
        return [b""]
    if path == "/fail-early":
        raise RuntimeError("the app failed before answering")
    if path == "/fail-late":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _fail_after_first()
    if path == "/bad-header":
        start_response("200 OK", [("X-Evil", "a\r\nInjected: yes")])
        return [b"never"]
    if path == "/sleep":
        time.sleep(float(environ.get("QUERY_STRING") or "1"))  # blocks, as a sync tool calling a slow service does
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"slept"]
    if path == "/unread":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
        return [b"unread"]
    body = environ["wsgi.input"].read()
    payload = json.dumps(environ_view(environ, body), sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


def _stream(count: int) -> Iterable[bytes]:
    for number in range(count):
        yield f"event {number}\n".encode()
        time.sleep(0.2)


def _empty_first() -> Iterable[bytes]:
    yield b""
    time.sleep(1.0)
    yield b"data: late\n\n"


def _fail_after_first() -> Iterable[bytes]:
    yield b"first\n"
    raise RuntimeError("the app failed in the middle of its answer")
