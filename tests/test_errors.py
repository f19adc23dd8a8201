"""Errors are JSON with the right status; nothing turns into an HTML page or a stack trace."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import Tokens
from tests.support.jsonrpc import request_headers


def test_unknown_path_with_a_valid_token_is_json_404(client: FlaskClient, tokens: Tokens) -> None:
    response = client.get("/nothing-here", headers=tokens.header())
    assert response.status_code == 404
    assert response.content_type == "application/json"
    assert response.get_json()["error"] == "not_found"


def test_body_over_4_mib_is_413(client: FlaskClient, tokens: Tokens) -> None:
    headers = request_headers("tools/list", token=tokens.mint())
    response = client.post("/mcp", headers=headers, data=b"x" * (4 * 1024 * 1024 + 1))
    assert response.status_code == 413
    assert response.get_json() == {
        "error": "request_entity_too_large",
        "error_description": "The data value transmitted exceeds the capacity limit.",
    }


def test_a_bug_answers_500_without_details(app: Flask, tokens: Tokens) -> None:
    @app.get("/explode")
    def explode() -> str:
        raise RuntimeError("secret internals")

    response = app.test_client().get("/explode", headers=tokens.header())
    assert response.status_code == 500
    assert response.get_json() == {
        "error": "server_error",
        "error_description": "The server could not complete the request",
    }


def test_sdk_refusals_without_a_json_body_get_one(client: FlaskClient, tokens: Tokens) -> None:
    headers = {"Authorization": f"Bearer {tokens.mint()}", "Accept": "application/json, text/event-stream"}
    response = client.post("/mcp", headers={**headers, "Content-Type": "text/plain"}, data=b"{}")
    assert response.status_code == 400  # the SDK's status, kept
    assert response.content_type == "application/json"
    assert response.get_json() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32600, "message": "Invalid Content-Type header"},
    }


def test_sdk_json_answers_pass_through_byte_for_byte(client: FlaskClient, tokens: Tokens) -> None:
    headers = request_headers("tools/list", token=tokens.mint())
    response = client.post("/mcp", headers=headers, data=b"{nope")
    assert response.status_code == 400
    assert response.get_data() == b'{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}'


def test_development_server_request_lines_lose_their_query_string() -> None:
    import logging

    from app.logging_setup import RedactQueryStrings

    record = logging.LogRecord("werkzeug", logging.INFO, __file__, 1, '%s - - [%s] "%s" %s %s', None, None)
    record.args = ("127.0.0.1", "now", "POST /mcp?access_token=eyJ.secret HTTP/1.1", "401", "-")
    assert RedactQueryStrings().filter(record) is True
    assert record.getMessage() == '127.0.0.1 - - [now] "POST /mcp HTTP/1.1" 401 -'
