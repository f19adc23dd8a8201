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
import os
import re
import secrets
import time
from typing import Any

from flask import Flask
from flask import Request
from flask import Response
from flask.ctx import _AppCtxGlobals

from app import request_end
from app.auth.challenges import BearerError
from app.auth.principal import Principal
from app.log_lines import write_line
from app.mcp_calls import MCPRequest
from app.request_end import Closer

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


class RequestGlobals(_AppCtxGlobals):
    """``flask.g``, holding the time its request started; app.metrics times tool calls from it too.

    Set as the request's app context is pushed, before any hook runs, for the price
    of one attribute: a ``before_request`` hook would be a call and a context lookup
    per request. Flask documents ``app_ctx_globals_class`` for such a ``g``.
    """

    def __init__(self) -> None:
        self.request_started = time.perf_counter()


def init_app(app: Flask, *, enabled: bool = True, mcp_endpoint: str = "mcp") -> None:
    """Request ids on every response and, when ``enabled``, the audit line of every MCP request."""
    lines = AuditLines()
    app.app_ctx_globals_class = RequestGlobals

    def finish(response: Response, req: Request, ctx: Any) -> Closer | None:
        offered = req.environ.get("HTTP_X_REQUEST_ID")
        request_id = offered if offered and _SANE_REQUEST_ID.fullmatch(offered) else _request_ids.next()
        response.headers.add(REQUEST_ID_HEADER, request_id)  # no view sets it: add, not a search-and-replace
        if enabled and req.endpoint == mcp_endpoint:
            head, tail = lines.line_around_duration(ctx, req, request_id, response.status_code)
            started = ctx.__dict__.get("request_started") or time.perf_counter()
            # Written when the last byte has gone out, so that a stream is timed to its end.
            return lambda: _write(head, tail, started)
        return None

    request_end.on_response(app, finish)


class _SecondClock:
    """ISO 8601 UTC timestamps with milliseconds; the part up to the second is formatted once a second."""

    _MILLISECONDS = tuple(f".{millisecond:03d}+00:00" for millisecond in range(1000))

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self) -> str:
        second, millisecond = divmod(time.time_ns() // 1_000_000, 1000)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return self._prefix + self._MILLISECONDS[millisecond]


_utc_timestamp = _SecondClock()
# json.dumps with arguments builds a new encoder on every call.
_encode = json.JSONEncoder(separators=(",", ":")).encode
_quote = json.encoder.encode_basestring_ascii
FRAGMENT_CACHE_SIZE = 1024


def _json(value: object) -> str:
    """One value as ``json.dumps(value, separators=(",", ":"))`` writes it."""
    if value.__class__ is str:
        return _quote(value)
    return "null" if value is None else _encode(value)


class AuditLines:
    """The audit line of a request, as compact JSON, in the order of the fields in the module docstring.

    It is the line ``json.dumps(record, separators=(",", ":"))`` would write for the
    record, built without the generic encoder (about 6 us for these few fields): what
    repeats from request to request, the caller (the verifier hands out one
    :class:`Principal` per token) and the method and target, is encoded once and kept.
    """

    def __init__(self, size: int = FRAGMENT_CACHE_SIZE) -> None:
        self._size = size
        self._callers: dict[int, tuple[Principal, str]] = {}
        self._calls: dict[tuple[str | None, str | None, str | None], str] = {}

    def _caller(self, principal: Principal | None) -> str:
        if principal is None:
            return '"issuer":null,"sub":null,"client_id":null,"jti":null'
        cached = self._callers.get(id(principal))
        if cached is not None and cached[0] is principal:
            return cached[1]
        part = (
            f'"issuer":{_json(principal.issuer)},"sub":{_json(principal.sub)},'
            f'"client_id":{_json(principal.client_id)},"jti":{_json(principal.claims.get("jti"))}'
        )
        if len(self._callers) >= self._size:
            self._callers.clear()
        # The principal is kept alive with its entry, so its id cannot be reused while the entry exists.
        self._callers[id(principal)] = (principal, part)
        return part

    def _call(self, mcp: MCPRequest) -> str:
        tool = target = None
        for call in mcp.calls:
            if call.target is not None:
                if target is None:
                    target = call.target
                if tool is None and call.method == "tools/call":
                    tool = call.target
        key = (mcp.method, tool, target)
        part = self._calls.get(key)
        if part is None:
            part = f'"method":{_json(mcp.method)},"tool":{_json(tool)},"target":{_json(target)}'
            if len(self._calls) >= self._size:
                self._calls.clear()
            self._calls[key] = part
        return part

    def line_around_duration(self, ctx: Any, req: Any, request_id: str, status: int) -> tuple[str, str]:
        """The line before and after the duration, which is known only when the answer has gone out.

        ``ctx`` and ``req``: flask.g and the request.
        """
        found = ctx.__dict__  # flask.g's own get is a Python call; its __dict__'s is not
        principal: Principal | None = found.get("principal")
        # Only what the authentication hook already parsed: an unauthenticated or
        # oversized body is never read for the log's sake.
        mcp: MCPRequest = found.get("mcp_request") or _NO_CALLS
        head = (
            f'{{"time":"{_utc_timestamp()}","request_id":{_quote(request_id)},'
            f'"http_method":{_quote(req.method)},"status":{status:d},"duration_ms":'
        )
        tail = f',{self._caller(principal)},{self._call(mcp)},"client_address":{_json(req.remote_addr)}'
        refusal: BearerError | None = found.get("auth_error")
        if refusal is not None:
            tail += f',"refusal":{_json(refusal.error or "no_token")}'
            if refusal.scope is not None and refusal.status_code == 403:
                granted = list(principal.scopes) if principal else []
                tail += f',"scopes_required":{_encode(list(refusal.scope))},"scopes_granted":{_encode(granted)}'
        return head, tail + "}"


def _write(head: str, tail: str, started: float) -> None:
    # repr(round(milliseconds, 2)), as json.dumps writes it, for a third of the cost of round() and repr.
    duration_ms = f"{(time.perf_counter() - started) * 1000:.2f}".rstrip("0")
    if duration_ms[-1] == ".":
        duration_ms += "0"
    write_line(audit_logger, logging.INFO, f"{head}{duration_ms}{tail}")
