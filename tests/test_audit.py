"""The audit log: one JSON line per MCP request, never a token; the request id echoed."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from app.audit import audit_logger
from tests.conftest import Tokens
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import call_tool
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict[str, object]] = []
        self.raw: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.raw.append(record.getMessage())
        self.records.append(json.loads(record.getMessage()))


@pytest.fixture
def audit() -> Iterator[Lines]:
    lines = Lines()
    audit_logger.addHandler(lines)
    yield lines
    audit_logger.removeHandler(lines)


def stable(record: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in record.items() if k not in ("time", "duration_ms", "request_id")}


def test_a_tool_call(client: FlaskClient, tokens: Tokens, issuer: MockIssuer, audit: Lines) -> None:
    token = tokens.mint(sub="ann", client_id="cli", jti="jti-1")
    headers, body = call_tool("greet_user", {"name": "x"}, token=token)
    response = client.post("/mcp", headers={**headers, "X-Request-Id": "req-42"}, data=body)
    response.close()
    assert response.headers["X-Request-Id"] == "req-42"
    (record,) = audit.records
    assert stable(record) == {
        "http_method": "POST",
        "status": 200,
        "issuer": issuer.issuer,
        "sub": "ann",
        "client_id": "cli",
        "jti": "jti-1",
        "method": "tools/call",
        "tool": "greet_user",
        "target": "greet_user",
        "client_address": "127.0.0.1",
    }
    assert record["request_id"] == "req-42"
    assert isinstance(record["duration_ms"], float)
    assert token not in audit.raw[0]


def test_a_step_up_records_the_scopes(client: FlaskClient, tokens: Tokens, audit: Lines) -> None:
    headers, body = call_tool("delete_todo", {"id": 1}, token=tokens.mint("todo:read", sub="ben"))
    client.post("/mcp", headers=headers, data=body).close()
    (record,) = audit.records
    assert record["status"] == 403
    assert record["refusal"] == "insufficient_scope"
    assert record["scopes_required"] == ["todo:delete"]
    assert record["scopes_granted"] == ["todo:read"]
    assert record["tool"] == "delete_todo"


def test_a_refused_token(client: FlaskClient, tokens: Tokens, audit: Lines) -> None:
    token = tokens.mint(exp=1_000_000)
    client.post("/mcp", headers=request_headers("tools/list", token=token), json=request_body("tools/list")).close()
    (record,) = audit.records
    assert (record["status"], record["refusal"], record["sub"], record["method"]) == (401, "invalid_token", None, None)
    assert token not in audit.raw[0]


def test_no_token(client: FlaskClient, audit: Lines) -> None:
    client.post("/mcp", json=request_body("tools/list")).close()
    assert [(r["status"], r["refusal"]) for r in audit.records] == [(401, "no_token")]


def test_an_insane_request_id_is_replaced(client: FlaskClient, audit: Lines) -> None:
    response = client.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces"})
    assert len(response.headers["X-Request-Id"]) == 32
    assert audit.records == []  # only MCP requests are audited


def test_a_streamed_call_is_logged_when_its_stream_ends(client: FlaskClient, tokens: Tokens, audit: Lines) -> None:
    from tests.support.jsonrpc import HANDSHAKE

    headers, body = call_tool("count_to", {"n": 2}, era=HANDSHAKE, token=tokens.mint(sub="streamer"))
    response = client.post("/mcp", headers=headers, data=body, buffered=False)
    assert response.content_type == "text/event-stream"
    chunks = list(response.response)
    assert audit.records == []  # not before the stream has ended
    response.close()
    (record,) = audit.records
    assert (record["status"], record["tool"], record["sub"]) == (200, "count_to", "streamer")
    assert record["duration_ms"] >= 350  # two steps of 0.2 s
    assert b"Counted to 2." in b"".join(chunks)


def exact_json(line: str) -> dict[str, object]:
    """The record of ``line``, which must be exactly what json.dumps writes for it."""
    record: dict[str, object] = json.loads(line)
    assert line == json.dumps(record, separators=(",", ":"))
    return record


@pytest.mark.parametrize(
    "sub",
    ['quote " backslash \\ newline \n tab \t', "accents é and emoji 😀 and \u2028", "plain"],
)
def test_lines_are_exactly_compact_json(client: FlaskClient, tokens: Tokens, audit: Lines, sub: str) -> None:
    token = tokens.mint(sub=sub, client_id=None, jti=None)
    headers, body = call_tool("greet_user", {"name": "x"}, token=token)
    client.post("/mcp", headers=headers, data=body).close()
    client.post("/mcp", headers=headers, data=body).close()  # the caller's part now comes from the cache
    for raw in audit.raw:
        record = exact_json(raw)
        assert list(record) == [
            "time", "request_id", "http_method", "status", "duration_ms", "issuer", "sub", "client_id",
            "jti", "method", "tool", "target", "client_address",
        ]  # fmt: skip
        assert (record["sub"], record["client_id"], record["jti"]) == (sub, None, None)
    assert audit.raw[0].split('"sub"')[1] == audit.raw[1].split('"sub"')[1]


def test_a_step_up_line_is_exactly_compact_json(client: FlaskClient, tokens: Tokens, audit: Lines) -> None:
    headers, body = call_tool("delete_todo", {"id": 1}, token=tokens.mint("todo:read", sub="ben"))
    client.post("/mcp", headers=headers, data=body).close()
    record = exact_json(audit.raw[0])
    assert list(record)[-3:] == ["refusal", "scopes_required", "scopes_granted"]


def test_a_batch_names_its_first_target(client: FlaskClient, tokens: Tokens, audit: Lines) -> None:
    from tests.support.jsonrpc import HANDSHAKE

    token = tokens.mint("todo:read")
    batch = [
        request_body("tools/list", era=HANDSHAKE, id=1),
        request_body("tools/call", {"name": "greet_user", "arguments": {"name": "x"}}, era=HANDSHAKE, id=2),
    ]
    client.post("/mcp", headers=request_headers("tools/list", era=HANDSHAKE, token=token), json=batch).close()
    (record,) = [exact_json(raw) for raw in audit.raw]
    assert (record["tool"], record["target"]) == ("greet_user", "greet_user")
