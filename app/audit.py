"""The audit log: one JSON line per MCP request, and a request id that ties it to the client's view.

Each line says who called (issuer, sub, client_id), what (JSON-RPC method, tool
or resource or prompt), how it ended (status, and for a refusal the reason and,
for a step-up, the scopes required and granted) and how long it took, the
whole stream included. Never the token: the MCP security best practices name
"tokens cached or logged on the server" as a theft path; ``jti`` identifies a
token well enough.

The request id comes from ``X-Request-Id`` when a proxy or client set a sane
one, else it is generated; it is echoed on every response.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
import secrets
import time
from typing import Any

from flask import Flask
from flask import Response
from flask import g
from flask import request

from app.auth.challenges import BearerError
from app.auth.principal import Principal
from app.log_lines import write_line
from app.mcp_request import MCPRequest

audit_logger = logging.getLogger("app.audit")

REQUEST_ID_HEADER = "X-Request-Id"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class RequestIds:
    """Request ids unique per process without a system call each: a random prefix and a counter.

    32 hex digits like a UUID; the prefix is drawn again in a forked child, so two
    workers never hand out the same id.
    """

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


_request_ids = RequestIds()
_NO_CALLS = MCPRequest()


def _begin() -> None:
    ctx = g._get_current_object()  # type: ignore[attr-defined]
    ctx.request_started = time.perf_counter()
    offered = request.environ.get("HTTP_X_REQUEST_ID")
    ctx.request_id = offered if offered and _SANE_REQUEST_ID.fullmatch(offered) else _request_ids.next()


def audit_record(status: int, duration_ms: float, ctx: Any = None, req: Any = None) -> dict[str, Any]:
    """The facts of this request, for the audit line (``ctx`` and ``req``: flask.g and the request, if at hand)."""
    if ctx is None:
        ctx = g._get_current_object()  # type: ignore[attr-defined]
    if req is None:
        req = request._get_current_object()  # type: ignore[attr-defined]
    principal: Principal | None = ctx.get("principal")
    # Only what the authentication hook already parsed: an unauthenticated or
    # oversized body is never read for the log's sake.
    mcp: MCPRequest = ctx.get("mcp_request") or _NO_CALLS
    tool = target = None
    for call in mcp.calls:
        if call.target is not None:
            if target is None:
                target = call.target
            if tool is None and call.method == "tools/call":
                tool = call.target
    record: dict[str, Any] = {
        "time": _utc_timestamp(),
        "request_id": ctx.get("request_id"),
        "http_method": req.method,
        "status": status,
        "duration_ms": round(duration_ms, 2),
        "issuer": principal.issuer if principal else None,
        "sub": principal.sub if principal else None,
        "client_id": principal.client_id if principal else None,
        "jti": principal.claims.get("jti") if principal else None,
        "method": mcp.method,
        "tool": tool,
        "target": target,
        "client_address": req.remote_addr,
    }
    refusal: BearerError | None = ctx.get("auth_error")
    if refusal is not None:
        record["refusal"] = refusal.error or "no_token"
        if refusal.scope is not None and refusal.status_code == 403:
            record["scopes_required"] = list(refusal.scope)
            record["scopes_granted"] = list(principal.scopes) if principal else []
    return record


def init_app(app: Flask, *, enabled: bool = True, mcp_endpoint: str = "mcp") -> None:
    app.before_request_funcs.setdefault(None, []).insert(0, _begin)

    @app.after_request
    def finish(response: Response) -> Response:
        ctx = g._get_current_object()  # type: ignore[attr-defined]
        request_id = ctx.get("request_id")
        if request_id is not None:
            response.headers[REQUEST_ID_HEADER] = request_id
        if enabled:
            req = request._get_current_object()  # type: ignore[attr-defined]
            if req.endpoint == mcp_endpoint:
                started = ctx.get("request_started", time.perf_counter())
                # Built now, while the request context exists; written when the last byte has gone out.
                record = audit_record(response.status_code, 0.0, ctx, req)
                response.call_on_close(lambda: _write(record, started))
        return response


class _SecondClock:
    """ISO 8601 UTC timestamps with milliseconds; the part up to the second is formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{int((now - second) * 1000):03d}+00:00"


_utc_timestamp = _SecondClock()
# json.dumps with arguments builds a new encoder on every call.
_encode = json.JSONEncoder(separators=(",", ":")).encode
_quote = json.encoder.encode_basestring_ascii


def encode_record(record: dict[str, Any]) -> str:
    """The record as compact JSON, exactly as ``json.dumps(record, separators=(",", ":"))`` writes it.

    The encoder's general machinery costs about 6 us for these few flat fields; strings
    go through the same C escaping function json uses. Anything but strings, ints,
    floats and None (the scopes of a step-up) takes the encoder.
    """
    parts = []
    for key, value in record.items():
        kind = value.__class__
        if kind is str:
            encoded = _quote(value)
        elif value is None:
            encoded = "null"
        elif kind is int or (kind is float and math.isfinite(value)):
            encoded = kind.__repr__(value)
        else:
            return _encode(record)
        parts.append(f"{_quote(key)}:{encoded}")
    return "{" + ",".join(parts) + "}"


def _write(record: dict[str, Any], started: float) -> None:
    record["duration_ms"] = round((time.perf_counter() - started) * 1000, 2)
    write_line(audit_logger, logging.INFO, encode_record(record))
