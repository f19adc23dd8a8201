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

import json
import logging
import re
import time
import uuid
from datetime import UTC
from datetime import datetime
from typing import Any

from flask import Flask
from flask import Response
from flask import g
from flask import request

from app.auth.challenges import BearerError
from app.auth.principal import Principal
from app.mcp_request import MCPRequest

audit_logger = logging.getLogger("app.audit")

REQUEST_ID_HEADER = "X-Request-Id"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def _begin() -> None:
    g.request_started = time.perf_counter()
    offered = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = offered if _SANE_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex


def audit_record(status: int, duration_ms: float) -> dict[str, Any]:
    """The facts of this request, for the audit line."""
    principal: Principal | None = g.get("principal")
    # Only what the authentication hook already parsed: an unauthenticated or
    # oversized body is never read for the log's sake.
    mcp: MCPRequest = g.get("mcp_request") or MCPRequest()
    record: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "request_id": g.get("request_id"),
        "http_method": request.method,
        "status": status,
        "duration_ms": round(duration_ms, 2),
        "issuer": principal.issuer if principal else None,
        "sub": principal.sub if principal else None,
        "client_id": principal.client_id if principal else None,
        "jti": principal.claims.get("jti") if principal else None,
        "method": mcp.method,
        "tool": next(iter(mcp.targets("tools/call")), None),
        "target": next((call.target for call in mcp.calls if call.target is not None), None),
        "client_address": request.remote_addr,
    }
    refusal: BearerError | None = g.get("auth_error")
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
        request_id = g.get("request_id")
        if request_id is not None:
            response.headers[REQUEST_ID_HEADER] = request_id
        if enabled and request.endpoint == mcp_endpoint:
            started = g.get("request_started", time.perf_counter())
            # Built now, while the request context exists; written when the last byte has gone out.
            record = audit_record(response.status_code, 0.0)
            response.call_on_close(lambda: _write(record, started))
        return response


def _write(record: dict[str, Any], started: float) -> None:
    record["duration_ms"] = round((time.perf_counter() - started) * 1000, 2)
    audit_logger.info(json.dumps(record, separators=(",", ":")))
