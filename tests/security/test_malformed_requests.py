"""Malformed HTTP and JSON-RPC inputs through the real gunicorn: the right 4xx with a JSON body, never a 500."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from dataclasses import field

import httpx2
import pytest

from tests.security.test_bad_tokens import BAD_TOKENS
from tests.support.jsonrpc import HANDSHAKE
from tests.support.jsonrpc import MODERN
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers
from tests.support.servers import RunningServer

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Bad:
    name: str
    status: int
    code: int | None  # the JSON-RPC error code, or None for an HTTP-level JSON error body
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    era: str = MODERN
    method: str = "POST"


def body(value: object) -> bytes:
    return json.dumps(value).encode()


def call(params: dict[str, object], era: str = MODERN) -> bytes:
    return body(request_body("tools/call", params, era=era))


LIST = body(request_body("tools/list"))
CALL_HEADERS = {"Mcp-Method": "tools/call"}

CASES = [
    Bad("bad JSON", 400, -32700, b"{nope"),
    Bad("empty body", 400, -32700, b""),
    Bad("a batch", 400, -32600, body([request_body("tools/list"), request_body("tools/list", id=2)])),
    Bad("an empty batch", 400, -32600, b"[]"),
    Bad("a JSON string", 400, -32600, b'"tools/list"'),
    Bad("no method", 400, -32600, body({"jsonrpc": "2.0", "id": 1})),
    Bad("jsonrpc 1.0", 400, -32600, body({**request_body("tools/list"), "jsonrpc": "1.0"})),
    Bad("params not an object", 400, -32600, body({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": [1]})),
    Bad("id an object", 400, -32600, body({"jsonrpc": "2.0", "id": {"a": 1}, "method": "tools/list"})),
    Bad("a JSON-RPC response posted", 400, -32600, body({"jsonrpc": "2.0", "id": 1, "result": {}})),
    Bad("nesting too deep", 400, -32700, b"[" * 50_000 + b"]" * 50_000),
    Bad("a number too large", 400, -32700, b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"method":"tools/list"}'),
    Bad("invalid UTF-8", 400, -32700, b'{"jsonrpc":"2.0","id":1,"method":"\xff\xfe"}'),
    Bad("text/plain content type", 400, -32600, LIST, {"Content-Type": "text/plain"}),
    Bad("form content type", 400, -32600, b"a=1", {"Content-Type": "application/x-www-form-urlencoded"}),
    Bad("Accept without JSON or SSE", 406, -32600, LIST, {"Accept": "application/xml"}),
    Bad("Accept text/html", 406, -32600, LIST, {"Accept": "text/html"}),
    Bad("an unsupported protocol version", 400, -32020, LIST, {"MCP-Protocol-Version": "1999-01-01"}),
    Bad("version header without _meta", 400, -32602, body({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})),
    Bad("Mcp-Method differs from the body", 400, -32020, LIST, {"Mcp-Method": "prompts/list"}),
    Bad("an unknown method", 404, -32601, body(request_body("nope/nope")), {"Mcp-Method": "nope/nope"}),
    Bad("tools/call without a name", 400, -32602, call({"arguments": {}}), CALL_HEADERS),
    Bad("tools/call with a number for a name", 400, -32020, call({"name": 5}), {**CALL_HEADERS, "Mcp-Name": "5"}),
    Bad(
        "Mcp-Name differs from the body's tool",
        400,
        -32020,
        call({"name": "greet_user", "arguments": {"name": "x"}}),
        {**CALL_HEADERS, "Mcp-Name": "whoami"},
    ),
    Bad(
        "arguments not an object",
        400,
        -32602,
        call({"name": "greet_user", "arguments": [1]}),
        {**CALL_HEADERS, "Mcp-Name": "greet_user"},
    ),
    Bad("a body over 4 MiB", 413, None, b"x" * (4 * 1024 * 1024 + 10)),
    Bad("PUT", 405, None, LIST, method="PUT"),
    Bad("GET on the stateless endpoint", 405, None, b"", method="GET"),
    Bad("DELETE on the stateless endpoint", 405, None, b"", method="DELETE"),
    Bad("handshake era: bad JSON", 400, -32700, b"{nope", era=HANDSHAKE),
    Bad("handshake era: a batch of nonsense", 400, -32602, b"[1, 2]", era=HANDSHAKE),
    Bad(
        "handshake era: Accept without SSE",
        406,
        -32600,
        body(request_body("tools/list", era=HANDSHAKE)),
        {"Accept": "application/json"},
        era=HANDSHAKE,
    ),
    Bad(
        "handshake era: text/plain",
        400,
        -32600,
        body(request_body("tools/list", era=HANDSHAKE)),
        {"Content-Type": "text/plain"},
        era=HANDSHAKE,
    ),
]


def test_the_battery_is_big_enough() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize("bad", CASES, ids=[bad.name for bad in CASES])
def test_answered_with_the_right_4xx_and_json(hardened_server: RunningServer, bad: Bad) -> None:
    method = "tools/list" if bad.era == MODERN else "initialize"
    headers = {**request_headers(method, era=bad.era, token=hardened_server.token()), **bad.headers}
    response = httpx2.request(bad.method, hardened_server.url, headers=headers, content=bad.body, timeout=30)
    assert response.status_code == bad.status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    if bad.code is None:
        assert set(answer) == {"error", "error_description"}
    else:
        assert answer["jsonrpc"] == "2.0"
        assert answer["error"]["code"] == bad.code
    assert "Traceback" not in response.text


def test_duplicate_protocol_headers(hardened_server: RunningServer) -> None:
    port = int(hardened_server.base.rsplit(":", 1)[1])
    payload = LIST
    headers = request_headers("tools/list", token=hardened_server.token())
    lines = ["POST /mcp HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(payload)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()] + ["MCP-Protocol-Version: 2025-11-25"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    status_line, _, rest = raw.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 400 ")
    answer = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert answer["error"]["code"] == -32020


def test_an_oversized_header_and_a_broken_request_line(hardened_server: RunningServer) -> None:
    big = httpx2.post(hardened_server.url, headers={"X-Junk": "a" * 40_000}, content=LIST)
    assert big.status_code == 431
    port = int(hardened_server.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"BLAH /mcp HTTP/9.9\r\n\r\n")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400")
    assert b"Traceback" not in reply


def test_bad_tokens_through_the_real_server(hardened_server: RunningServer) -> None:
    """The whole token battery once more, over real HTTP: every one refused, none with a 500."""
    statuses = {}
    for bad in BAD_TOKENS:
        token = bad.build(hardened_server.issuer, hardened_server.url)
        headers = request_headers("tools/list", token=token)
        response = httpx2.post(hardened_server.url, headers=headers, content=LIST, timeout=30)
        is_json = response.headers.get("content-type", "").startswith("application/json")
        statuses[bad.name] = (response.status_code, response.json()["error"] if is_json else None)
    expected = {bad.name: (bad.status, bad.error) for bad in BAD_TOKENS}
    # gunicorn refuses a 100 KB header line itself (the limit is 32 KiB), before the app sees it.
    expected["100 KB token"] = (431, None)
    assert statuses == expected
