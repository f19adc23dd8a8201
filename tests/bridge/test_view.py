"""The /mcp view (app.bridge): how the SDK's ASGI messages become the WSGI response.

The SDK's side is scripted here (a fake :class:`Exchange`), so each path of
``MCPBridge.handle`` is reached on purpose: a stream whose first event is late
(the timeout path), a handler that answers nothing, a plain-text refusal turned
into a JSON-RPC error, and an exception while waiting.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from app.bridge import EXTENSION_KEY
from app.bridge import FIRST_EVENT_WAIT
from app.bridge import MCPBridge
from app.bridge import _as_jsonrpc_error
from app.bridge.asgi_to_wsgi import TIMED_OUT
from tests.conftest import Tokens
from tests.support.jsonrpc import call_tool
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers


class ScriptedExchange:
    """Plays back messages; records the timeouts asked for, the socket watched and whether it was closed."""

    def __init__(self, *script: Any) -> None:
        self.script = list(script)
        self.timeouts: list[float | None] = []
        self.watched: list[object] = []
        self.closed = False

    def next_message(self, timeout: float | None = None) -> Any:
        self.timeouts.append(timeout)
        item = self.script.pop(0) if self.script else None
        if isinstance(item, BaseException):
            raise item
        return item

    def queued_message(self) -> Any:
        return None

    def watch_client(self, sock: object) -> None:
        self.watched.append(sock)

    def close(self) -> None:
        self.closed = True


def start(status: int, content_type: bytes) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]}


def body(data: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


@pytest.fixture
def scripted(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ScriptedExchange]]:
    """Each exchange the view opens is the next of this list."""
    exchanges: list[ScriptedExchange] = []
    bridge: MCPBridge = app.extensions[EXTENSION_KEY]
    monkeypatch.setattr(bridge, "_exchange", lambda scope, data, user: exchanges.pop(0))
    yield exchanges


def post(app: Flask, tokens: Tokens):  # type: ignore[no-untyped-def]
    headers, data = call_tool("whoami", token=tokens.mint())
    return app.test_client().post("/mcp", headers=headers, data=data, buffered=False)


def test_a_stream_whose_first_event_is_late_gets_its_headers_at_once(
    app: Flask, tokens: Tokens, scripted: list[ScriptedExchange]
) -> None:
    exchange = ScriptedExchange(
        start(200, b"text/event-stream"), TIMED_OUT, body(b"event: message\ndata: {}\n\n", more=True), body(b"")
    )
    scripted.append(exchange)
    response = post(app, tokens)
    assert (response.status_code, response.headers["Content-Type"]) == (200, "text/event-stream")
    chunks = iter(response.response)
    assert next(chunks) == b""  # the headers leave now, with nothing of the body
    assert list(chunks) == [b"event: message\ndata: {}\n\n"]
    # The first wait is unbounded (the start), the second bounded: an event stream's first event.
    assert exchange.timeouts[:2] == [None, FIRST_EVENT_WAIT]
    assert (len(exchange.watched), exchange.closed) == (1, False)
    response.close()  # the WSGI server closes the body after its last byte: the exchange ends with it
    assert exchange.closed


def test_a_prompt_first_event_leaves_with_the_headers(
    app: Flask, tokens: Tokens, scripted: list[ScriptedExchange]
) -> None:
    exchange = ScriptedExchange(start(200, b"text/event-stream"), body(b"event: one\n\n", more=True), body(b""))
    scripted.append(exchange)
    response = post(app, tokens)
    chunks = list(response.response)
    response.close()
    assert chunks == [b"event: one\n\n"]


def test_a_json_answer_is_one_body_and_not_a_stream(
    app: Flask, tokens: Tokens, scripted: list[ScriptedExchange]
) -> None:
    exchange = ScriptedExchange(start(200, b"application/json"), body(b'{"jsonrpc":"2.0","id":1,"result":{}}'))
    scripted.append(exchange)
    response = post(app, tokens)
    assert (response.status_code, response.get_data()) == (200, b'{"jsonrpc":"2.0","id":1,"result":{}}')
    # A JSON start is not an event stream: its body is awaited without a bound.
    assert exchange.timeouts == [None, None]
    assert exchange.closed and exchange.watched == []


def test_a_handler_that_answers_nothing_is_a_500_from_the_error_tree(
    app: Flask, tokens: Tokens, scripted: list[ScriptedExchange]
) -> None:
    exchange = ScriptedExchange()
    scripted.append(exchange)
    response = post(app, tokens)
    assert response.status_code == 500
    assert response.get_json() == {"error": "server_error", "error_description": "The MCP handler gave no answer"}
    assert exchange.closed


def test_an_error_while_waiting_closes_the_exchange_and_answers_500(
    app: Flask, tokens: Tokens, scripted: list[ScriptedExchange]
) -> None:
    exchange = ScriptedExchange(start(200, b"text/event-stream"), RuntimeError("loop broke"))
    scripted.append(exchange)
    response = post(app, tokens)
    assert response.status_code == 500
    assert response.get_json() == {
        "error": "server_error",
        "error_description": "The server could not complete the request",
    }
    assert exchange.closed


@pytest.mark.parametrize(
    ("status", "text", "message"),
    [
        pytest.param(406, b"Not Acceptable: Client must accept text/event-stream", None, id="text"),
        pytest.param(400, b"  Invalid Content-Type header\n", "Invalid Content-Type header", id="stripped"),
        pytest.param(406, b"", "Not Acceptable", id="empty: the status phrase"),
        pytest.param(400, b"bad \xff byte", "bad \ufffd byte", id="not utf-8"),
    ],
)
def test_a_plain_refusal_of_the_sdk_becomes_a_json_rpc_error(
    app: Flask, tokens: Tokens, scripted: list[ScriptedExchange], status: int, text: bytes, message: str | None
) -> None:
    scripted.append(ScriptedExchange(start(status, b"text/plain"), body(text)))
    response = post(app, tokens)
    assert (response.status_code, response.headers["Content-Type"]) == (status, "application/json")
    assert response.get_json() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32600, "message": message if message is not None else text.decode()},
    }


def test_a_json_refusal_of_the_sdk_passes_through_untouched(
    app: Flask, tokens: Tokens, scripted: list[ScriptedExchange]
) -> None:
    refusal = b'{"jsonrpc":"2.0","id":"x","error":{"code":-32602,"message":"nope"}}'
    scripted.append(ScriptedExchange(start(400, b"application/json"), body(refusal)))
    response = post(app, tokens)
    assert (response.status_code, response.get_data()) == (400, refusal)


def test_as_jsonrpc_error_is_exact() -> None:
    response = _as_jsonrpc_error(415, b"Unsupported")
    assert (response.status_code, response.headers["Content-Type"]) == (415, "application/json")
    assert json.loads(response.get_data()) == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32600, "message": "Unsupported"},
    }


def test_stateless_get_and_delete_are_405_with_allow(app: Flask, tokens: Tokens) -> None:
    for method in ("GET", "DELETE"):
        response = app.test_client().open("/mcp", method=method, headers=tokens.header())
        assert (response.status_code, response.headers["Allow"]) == (405, "POST")
        assert response.get_json() == {
            "error": "method_not_allowed",
            "error_description": "This server is stateless: send every message as a POST",
        }


def test_the_real_handler_answers_through_the_same_view(app: Flask, tokens: Tokens) -> None:
    response = app.test_client().post(
        "/mcp", headers=request_headers("tools/list", token=tokens.mint()), json=request_body("tools/list")
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
