"""Stateful mode (MCP_STATEFUL=1, one worker): handshake-era sessions bound to the user who made them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx2
import pytest

from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import HANDSHAKE
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers
from tests.support.jsonrpc import result_of
from tests.support.mcp_client import connect
from tests.support.mcp_client import text_of
from tests.support.servers import RunningServer
from tests.support.servers import start_app

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

INITIALIZE = request_body(
    "initialize",
    {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
    era=HANDSHAKE,
)


@pytest.fixture(scope="module")
def stateful_server(issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_app(issuer, tmp_path_factory.mktemp("stateful"), workers=1, threads=8, MCP_STATEFUL="1")
    yield server
    server.stop()


@pytest.mark.parametrize("era", ["2026-07-28", HANDSHAKE])
async def test_the_sdk_client_works_in_both_eras(stateful_server: RunningServer, era: str) -> None:
    token = stateful_server.token("todo:read", "todo:write", sub=f"stateful-{era}")
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with connect(stateful_server.url, token, era=era) as client:
        assert len((await client.list_tools()).tools) == 6
        assert text_of(await client.call_tool("greet_user", {"name": "s"})) == "Hello, s!"
        assert text_of(await client.call_tool("count_to", {"n": 3}, progress_callback=on_progress)) == "Counted to 3."
        assert (await client.call_tool("add_todo", {"title": "t"})).structured_content["title"] == "t"
    assert progress == [1, 2, 3]


def test_a_session_is_bound_to_the_user_who_opened_it(stateful_server: RunningServer) -> None:
    alice = stateful_server.token("todo:read", "todo:write", sub="alice-session")
    bob = stateful_server.token("todo:read", "todo:write", sub="bob-session")
    opened = httpx2.post(
        stateful_server.url, headers=request_headers("initialize", era=HANDSHAKE, token=alice), json=INITIALIZE
    )
    assert opened.status_code == 200
    session = opened.headers["mcp-session-id"]
    assert result_of(opened.headers["content-type"], opened.content)["result"]["protocolVersion"] == HANDSHAKE

    add = request_body("tools/call", {"name": "add_todo", "arguments": {"title": "alice's"}}, era=HANDSHAKE, id=2)
    headers = {**request_headers("tools/call", era=HANDSHAKE, token=alice), "Mcp-Session-Id": session}
    assert httpx2.post(stateful_server.url, headers=headers, json=add).status_code == 200

    listing = request_body("tools/call", {"name": "list_todos", "arguments": {}}, era=HANDSHAKE, id=3)
    stolen = httpx2.post(
        stateful_server.url,
        headers={**request_headers("tools/call", era=HANDSHAKE, token=bob), "Mcp-Session-Id": session},
        json=listing,
    )
    assert stolen.status_code == 404
    assert stolen.json() == {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Session not found"}}
    assert "alice" not in stolen.text

    own = httpx2.post(stateful_server.url, headers={**headers, "Mcp-Session-Id": session}, json=listing)
    todos = json.loads(result_of(own.headers["content-type"], own.content)["result"]["content"][0]["text"])
    assert [todo["title"] for todo in todos["todos"]] == ["alice's"]


def test_an_unknown_session_is_404(stateful_server: RunningServer) -> None:
    headers = {
        **request_headers("tools/list", era=HANDSHAKE, token=stateful_server.token()),
        "Mcp-Session-Id": "0" * 32,
    }
    response = httpx2.post(stateful_server.url, headers=headers, json=request_body("tools/list", era=HANDSHAKE))
    assert response.status_code == 404


@pytest.fixture(scope="module")
def one_thread_stateful(issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_app(issuer, tmp_path_factory.mktemp("stateful-one"), workers=1, threads=1, MCP_STATEFUL="1")
    yield server
    server.stop()


def test_an_abandoned_get_stream_frees_its_thread_at_once(one_thread_stateful: RunningServer) -> None:
    """Without watching the socket, the only thread would stay taken until the SDK's 15 s keep-alive ping."""
    import socket
    import time

    server = one_thread_stateful
    token = server.token()
    opened = httpx2.post(server.url, headers=request_headers("initialize", era=HANDSHAKE, token=token), json=INITIALIZE)
    session = opened.headers["mcp-session-id"]
    port = int(server.base.rsplit(":", 1)[1])
    request = (
        f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
        f"Authorization: Bearer {token}\r\nMcp-Session-Id: {session}\r\nMCP-Protocol-Version: {HANDSHAKE}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # the stream is open and holds the thread
    started = time.monotonic()
    headers = {**request_headers("tools/list", era=HANDSHAKE, token=token), "Mcp-Session-Id": session}
    listed = httpx2.post(server.url, headers=headers, json=request_body("tools/list", era=HANDSHAKE), timeout=30)
    assert listed.status_code == 200
    assert time.monotonic() - started < 5


@pytest.fixture(scope="module")
def short_streams(issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_app(
        issuer,
        tmp_path_factory.mktemp("stateful-short-streams"),
        workers=1,
        MCP_STATEFUL="1",
        MCP_STREAM_LIFETIME="2",
        MCP_CAP_SESSIONS="3",
    )
    yield server
    server.stop()


def test_a_get_stream_ends_cleanly_after_its_lifetime_and_the_session_lives_on(short_streams: RunningServer) -> None:
    token = short_streams.token()
    opened = httpx2.post(
        short_streams.url, headers=request_headers("initialize", era=HANDSHAKE, token=token), json=INITIALIZE
    )
    session = opened.headers["mcp-session-id"]
    get = {
        **request_headers("ping", era=HANDSHAKE, token=token),
        "Accept": "text/event-stream",
        "Mcp-Session-Id": session,
    }
    for _ in range(2):  # the client reconnects: the same session opens its stream again
        started = time.monotonic()
        with httpx2.Client(timeout=30) as http, http.stream("GET", short_streams.url, headers=get) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"] == "text/event-stream"
            received = b"".join(stream.iter_bytes())  # ends without an error: a complete chunked response
        assert 1.9 < time.monotonic() - started < 5
        assert b"error" not in received
    headers = {**request_headers("tools/list", era=HANDSHAKE, token=token), "Mcp-Session-Id": session}
    assert (
        httpx2.post(short_streams.url, headers=headers, json=request_body("tools/list", era=HANDSHAKE)).status_code
        == 200
    )


def test_sessions_per_caller_through_gunicorn(short_streams: RunningServer) -> None:
    token = short_streams.token(sub="many-sessions")
    headers = request_headers("initialize", era=HANDSHAKE, token=token)
    statuses = [httpx2.post(short_streams.url, headers=headers, json=INITIALIZE).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    other = short_streams.token(sub="someone-else")
    assert (
        httpx2.post(
            short_streams.url, headers=request_headers("initialize", era=HANDSHAKE, token=other), json=INITIALIZE
        ).status_code
        == 200
    )
