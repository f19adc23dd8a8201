"""The 2024-11-05 HTTP+SSE transport (MCP_STATEFUL=1, MCP_LEGACY_SSE=1) under gunicorn, with real clients.

The official Python SDK's ``sse_client`` and the TypeScript SDK's
``SSEClientTransport`` call tools with progress; the wire is checked byte for
byte; sessions are bound to their opener, carry the instance's name, and end
(cancelling their tools) when the client goes away; refused tokens get the very
challenges ``/mcp`` answers with.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import call_tool
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers
from tests.support.mcp_client import connect_sse
from tests.support.mcp_client import json_of
from tests.support.mcp_client import text_of
from tests.support.servers import RunningServer
from tests.support.servers import start_app
from tests.support.sse import EventStream
from tests.support.stateful_tools import cancelled_marker
from tests.support.ts_client import run_sse_client

pytestmark = [pytest.mark.e2e]

INSTANCE = "alpha"
TOOLS = "flask_mcp_examples:register,tests.support.stateful_tools:register"
EXAMPLE_TOOLS = ["whoami", "greet_user", "list_todos", "add_todo", "delete_todo", "count_to"]
ENDPOINT_EVENT = re.compile(rb"event: endpoint\r\ndata: /mcp/messages/\?session_id=alpha\.[0-9a-f]{32}\r\n\r\n")
NO_SESSION = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Could not find session"}}
INITIALIZE_2024 = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "old", "version": "1"}},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def legacy_server(issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_app(
        issuer,
        tmp_path_factory.mktemp("legacy-sse"),
        workers=1,
        MCP_STATEFUL="1",
        MCP_LEGACY_SSE="1",
        MCP_INSTANCE_NAME=INSTANCE,
        MCP_TOOLS=TOOLS,
        MCP_SCOPES_SUPPORTED="todo:read todo:write",
    )
    yield server
    server.stop()


def stream_url(server: RunningServer) -> str:
    return server.base + "/mcp/sse"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def open_stream(http: httpx2.Client, server: RunningServer, token: str) -> Any:
    return http.stream("GET", stream_url(server), headers={**bearer(token), "Accept": "text/event-stream"})


@pytest.mark.anyio
async def test_the_python_sdk_sse_client_calls_tools_with_live_progress(legacy_server: RunningServer) -> None:
    token = legacy_server.token("todo:read", "todo:write", sub="py-sse", client_id="old-python-client")
    arrivals: list[tuple[float, float]] = []
    async with connect_sse(stream_url(legacy_server), token) as client:
        tools = [tool.name for tool in (await client.list_tools()).tools]
        started = time.monotonic()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            arrivals.append((round(time.monotonic() - started, 3), progress))

        counted = text_of(await client.call_tool("count_to", {"n": 5}, progress_callback=on_progress))
        finished = time.monotonic() - started
        whoami = json_of(await client.call_tool("whoami", {}))
        added = await client.call_tool("add_todo", {"title": "from an SSE-only client"})
        listed = json_of(await client.call_tool("list_todos", {}))
    assert tools == [*EXAMPLE_TOOLS, "wait_for_cancel", "count_across_reconnect"]
    assert counted == "Counted to 5."
    print("progress over HTTP+SSE:", arrivals, "done", round(finished, 3))
    # Live: one event about every 0.2 s, the first long before the call ends.
    assert [progress for _, progress in arrivals] == [1, 2, 3, 4, 5]
    assert arrivals[0][0] < 0.6 and finished >= 0.95, arrivals
    assert all(b[0] - a[0] > 0.1 for a, b in zip(arrivals, arrivals[1:], strict=False)), arrivals
    assert (whoami["sub"], whoami["client_id"], whoami["scopes"]) == (
        "py-sse",
        "old-python-client",
        ["todo:read", "todo:write"],
    )
    assert added.structured_content["title"] == "from an SSE-only client"
    assert [todo["title"] for todo in listed["todos"]] == ["from an SSE-only client"]


def test_the_typescript_sdk_sse_client_calls_tools_with_live_progress(legacy_server: RunningServer) -> None:
    token = legacy_server.token("todo:read", sub="ts-sse", client_id="old-ts-client")
    seen = run_sse_client(stream_url(legacy_server), token)
    assert seen["server"] == {"name": "flask-mcp-server", "version": ""}
    assert seen["tools"] == [*EXAMPLE_TOOLS, "wait_for_cancel", "count_across_reconnect"]
    assert seen["counted"] == ["Counted to 3."]
    # On the wire, every step before the result (count_to, whoami)...
    assert seen["received"] == [
        "result",
        "notifications/progress",
        "notifications/progress",
        "notifications/progress",
        "result",
        "result",
    ]
    # ...and live; the SDK hands its caller a progress update a tick after it takes it off the wire, so
    # the last one, which the result follows at once, may be dropped after the call has settled.
    assert [(p["progress"], p["total"]) for p in seen["progress"]][:2] == [(1, 3), (2, 3)]
    assert seen["progress"][0]["at"] < 500 and seen["finished"] >= 550, seen
    assert (seen["whoami"]["sub"], seen["whoami"]["client_id"]) == ("ts-sse", "old-ts-client")


def test_the_2024_11_05_wire(legacy_server: RunningServer) -> None:
    """GET opens the stream and names the message endpoint; each POST is 202; answers come down the stream."""
    token = legacy_server.token("todo:read", sub="wire")
    with httpx2.Client(timeout=10) as http, open_stream(http, legacy_server, token) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert stream.headers["cache-control"] == "no-store"
        assert stream.headers["x-accel-buffering"] == "no"
        events = EventStream(stream)
        endpoint = events.next_event()
        assert ENDPOINT_EVENT.fullmatch(f"event: {endpoint.event}\r\ndata: {endpoint.data}\r\n\r\n".encode())
        posted = http.post(legacy_server.base + endpoint.data, headers=bearer(token), json=INITIALIZE_2024)
        assert (posted.status_code, posted.text) == (202, "Accepted")
        answer = events.next_event()
        assert answer.event == "message"
        assert answer.json()["id"] == 1
        assert answer.json()["result"]["protocolVersion"] == "2024-11-05"
        assert answer.json()["result"]["serverInfo"] == {"name": "flask-mcp-server", "version": ""}

        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert http.post(legacy_server.base + endpoint.data, headers=bearer(token), json=initialized).status_code == 202
        call = request_body(
            "tools/call",
            {"name": "count_to", "arguments": {"n": 2}, "_meta": {"progressToken": 9}},
            era="2024-11-05",
            id=2,
        )
        assert http.post(legacy_server.base + endpoint.data, headers=bearer(token), json=call).status_code == 202
        first, second, result = (event.json() for event in events.events(3))
    assert first == {
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": {"progressToken": 9, "progress": 1.0, "total": 2.0, "message": "1 of 2"},
    }
    assert second["params"]["progress"] == 2.0
    assert result["id"] == 2
    assert result["result"]["content"] == [{"type": "text", "text": "Counted to 2."}]


def test_a_session_is_bound_to_its_opener_and_to_its_instance(legacy_server: RunningServer) -> None:
    alice = legacy_server.token("todo:read", sub="alice-sse")
    bob = legacy_server.token("todo:read", sub="bob-sse")
    with httpx2.Client(timeout=10) as http, open_stream(http, legacy_server, alice) as stream:
        events = EventStream(stream)
        messages = legacy_server.base + events.next_event().data
        session = messages.rsplit("=", 1)[1]
        sdk_id = session.removeprefix(f"{INSTANCE}.")
        # Another user's token, another instance's name, the bare SDK id, no prefix at all: as if unknown.
        for url, token in [
            (messages, bob),
            (messages.replace(f"={INSTANCE}.", "=beta."), alice),
            (messages.replace(f"={session}", f"={sdk_id}"), alice),
            (messages.replace(f"={session}", f"=alphaa.{sdk_id}"), alice),
        ]:
            refused = http.post(url, headers=bearer(token), json=INITIALIZE_2024)
            assert (refused.status_code, refused.headers["content-type"]) == (404, "application/json")
            assert refused.json() == NO_SESSION
        # The owner's session is untouched by all of it.
        assert http.post(messages, headers=bearer(alice), json=INITIALIZE_2024).status_code == 202
        assert events.next_event().json()["result"]["protocolVersion"] == "2024-11-05"


def test_a_client_that_disconnects_ends_its_session_and_cancels_its_tools(legacy_server: RunningServer) -> None:
    token = legacy_server.token("todo:read")
    marker = cancelled_marker(Path(legacy_server.process.log_path.parent, "instance"), "legacy-disconnect")
    with httpx2.Client(timeout=10) as http:
        with open_stream(http, legacy_server, token) as stream:
            events = EventStream(stream)
            messages = legacy_server.base + events.next_event().data
            http.post(messages, headers=bearer(token), json=INITIALIZE_2024)
            events.next_event()
            http.post(messages, headers=bearer(token), json={"jsonrpc": "2.0", "method": "notifications/initialized"})
            call = request_body(
                "tools/call",
                {
                    "name": "wait_for_cancel",
                    "arguments": {"marker": "legacy-disconnect"},
                    "_meta": {"progressToken": 1},
                },
                era="2024-11-05",
                id=2,
            )
            assert http.post(messages, headers=bearer(token), json=call).status_code == 202
            assert events.next_event().json()["method"] == "notifications/progress"  # the tool is running
            closed = time.monotonic()
        # The stream is closed: the tool is cancelled (it would wait 30 s) and the session is gone.
        while not marker.exists():
            assert time.monotonic() - closed < 5, "the tool was not cancelled"
            time.sleep(0.05)
        gone = http.post(messages, headers=bearer(token), json={"jsonrpc": "2.0", "id": 3, "method": "ping"})
    assert marker.read_text() == "cancelled"
    assert (gone.status_code, gone.json()) == (404, NO_SESSION)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(None, id="no token"),
        pytest.param("not-a-jwt", id="garbage"),
        pytest.param("expired", id="expired"),
        pytest.param("another resource", id="wrong audience"),
    ],
)
def test_a_refused_token_gets_the_challenges_of_the_mcp_endpoint(
    legacy_server: RunningServer, token: str | None
) -> None:
    if token == "expired":
        token = legacy_server.token(exp=1_000_000)
    elif token == "another resource":
        token = legacy_server.token(aud="https://other.example/mcp")
    headers = bearer(token) if token else {}
    with httpx2.Client(timeout=10) as http:
        mcp = http.post(
            legacy_server.url, headers={**request_headers("tools/list"), **headers}, json=request_body("tools/list")
        )
        stream = http.get(stream_url(legacy_server), headers={**headers, "Accept": "text/event-stream"})
        message = http.post(
            legacy_server.base + f"/mcp/messages/?session_id={INSTANCE}.{'0' * 32}",
            headers=headers,
            json=INITIALIZE_2024,
        )
    assert mcp.status_code == 401
    for response in (stream, message):
        assert response.status_code == mcp.status_code
        assert response.headers.get_list("www-authenticate") == mcp.headers.get_list("www-authenticate")
        assert response.headers["content-type"] == mcp.headers["content-type"] == "application/json"
        assert response.json() == mcp.json()
    assert mcp.headers.get_list("www-authenticate")[0].startswith("Bearer ")
    assert (
        f'resource_metadata="{legacy_server.base}/.well-known/oauth-protected-resource/mcp"'
        in mcp.headers["www-authenticate"]
    )


def test_a_tool_the_token_may_not_call_is_a_403_step_up_on_the_message_endpoint(legacy_server: RunningServer) -> None:
    token = legacy_server.token("todo:read", sub="step-up")
    headers, body = call_tool("add_todo", {"title": "t"}, era="2024-11-05", token=token)
    with httpx2.Client(timeout=10) as http, open_stream(http, legacy_server, token) as stream:
        messages = legacy_server.base + EventStream(stream).next_event().data
        on_messages = http.post(messages, headers=headers, content=body)
        on_mcp = http.post(legacy_server.url, headers=headers, content=body)
    assert (on_messages.status_code, on_mcp.status_code) == (403, 403)
    assert on_messages.headers.get_list("www-authenticate") == on_mcp.headers.get_list("www-authenticate")
    assert 'error="insufficient_scope"' in on_messages.headers["www-authenticate"]
    assert 'scope="todo:write"' in on_messages.headers["www-authenticate"]
    assert on_messages.json() == on_mcp.json()


def test_the_legacy_urls_serve_nothing_else(legacy_server: RunningServer) -> None:
    token = legacy_server.token()
    with httpx2.Client(timeout=10) as http:
        post_to_stream = http.post(stream_url(legacy_server), headers=bearer(token), json=INITIALIZE_2024)
        head_of_stream = http.head(stream_url(legacy_server), headers=bearer(token))
        get_messages = http.get(legacy_server.base + "/mcp/messages/", headers=bearer(token))
        no_session = http.post(legacy_server.base + "/mcp/messages/", headers=bearer(token), json=INITIALIZE_2024)
    assert post_to_stream.status_code == 405
    assert set(post_to_stream.headers["allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    assert (head_of_stream.status_code, head_of_stream.headers["allow"]) == (405, "GET")
    assert get_messages.status_code == 405
    assert (no_session.status_code, no_session.json()) == (
        400,
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "session_id is required"}},
    )
    assert json.loads(post_to_stream.text)["error"] == "method_not_allowed"


def test_a_stopping_worker_ends_its_session_streams_and_lets_calls_finish(
    issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """SIGTERM: open streams end at once (their clients reconnect elsewhere), a running call completes, and the
    process exits long before the graceful timeout those streams would otherwise have held it for."""
    server = start_app(
        issuer,
        tmp_path_factory.mktemp("legacy-stop"),
        workers=1,
        MCP_STATEFUL="1",
        MCP_LEGACY_SSE="1",
        MCP_GRACEFUL_TIMEOUT="30",
    )
    token = server.token()
    ended: dict[str, float] = {}
    call_result: list[Any] = []

    def hold(name: str, method: str, url: str, headers: dict[str, str], body: Any = None) -> None:
        with httpx2.Client(timeout=40) as http, http.stream(method, url, headers=headers, json=body) as stream:
            received = b"".join(stream.iter_raw())  # raises if the stream is cut instead of ended
        ended[name] = time.monotonic()
        if name == "call":
            call_result.extend(line for line in received.decode().splitlines() if line.startswith("data: {"))

    with httpx2.Client(timeout=10) as http:
        opened = http.post(
            server.url,
            headers=request_headers("initialize", era="2025-11-25", token=token),
            json=request_body(
                "initialize",
                {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "s", "version": "1"}},
                era="2025-11-25",
            ),
        )
    session = {
        **bearer(token),
        "Mcp-Session-Id": opened.headers["mcp-session-id"],
        "MCP-Protocol-Version": "2025-11-25",
    }
    headers, body = call_tool("count_to", {"n": 10}, era="2025-11-25", token=token)
    threads = [
        threading.Thread(target=hold, args=("legacy", "GET", stream_url(server), bearer(token))),
        threading.Thread(target=hold, args=("get", "GET", server.url, {**session, "Accept": "text/event-stream"})),
        threading.Thread(
            target=hold,
            args=(
                "call",
                "POST",
                server.url,
                {**headers, "Mcp-Session-Id": session["Mcp-Session-Id"]},
                json.loads(body),
            ),
        ),
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.8)  # all three are open; the call is about a third done
    stopped = time.monotonic()
    server.process.process.send_signal(signal.SIGTERM)
    exit_code = server.process.process.wait(20)
    exited = time.monotonic() - stopped
    for thread in threads:
        thread.join(5)
    log = server.process.log()
    server.stop()
    assert exit_code == 0, log
    assert ended["legacy"] - stopped < 1.5 and ended["get"] - stopped < 1.5, ended
    assert json.loads(call_result[-1][6:])["result"]["content"] == [{"type": "text", "text": "Counted to 10."}]
    assert exited < 5, exited
    assert "ending 2 open session stream(s)" in log
    assert "Traceback" not in log


@pytest.fixture(scope="module")
def capped_server(issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_app(
        issuer,
        tmp_path_factory.mktemp("legacy-capped"),
        workers=1,
        MCP_STATEFUL="1",
        MCP_LEGACY_SSE="1",
        MCP_STREAM_LIFETIME="1",
        MCP_CAP_STREAMS="2",
    )
    yield server
    server.stop()


def test_an_http_sse_stream_is_its_session_and_outlives_the_stream_lifetime(capped_server: RunningServer) -> None:
    """MCP_STREAM_LIFETIME ends standalone GET streams, which clients reopen; an HTTP+SSE stream is the session."""
    token = capped_server.token(sub="long-sse")
    with httpx2.Client(timeout=10) as http, open_stream(http, capped_server, token) as stream:
        events = EventStream(stream)
        messages = capped_server.base + events.next_event().data
        time.sleep(2.5)  # more than twice the lifetime
        posted = http.post(messages, headers=bearer(token), json=INITIALIZE_2024)
        assert (posted.status_code, posted.text) == (202, "Accepted")
        answer = events.next_event()
    assert answer.event == "message"
    assert answer.json()["result"]["protocolVersion"] == "2024-11-05"


def test_http_sse_streams_count_against_the_streams_cap(capped_server: RunningServer) -> None:
    token = capped_server.token(sub="many-sse")
    with (
        httpx2.Client(timeout=10) as http,
        open_stream(http, capped_server, token) as first,
        open_stream(http, capped_server, token) as second,
    ):
        assert (first.status_code, second.status_code) == (200, 200)
        refused = http.get(stream_url(capped_server), headers={**bearer(token), "Accept": "text/event-stream"})
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "5"
        assert refused.headers["content-type"] == "application/json"
        assert refused.json() == {
            "error": "too_many_requests",
            "error_description": "This caller already holds 2 open streams; close one before opening another "
            "(cap MCP_CAP_STREAMS)",
            "cap": "streams",
            "limit": 2,
        }
        other = capped_server.token(sub="someone-else-sse")
        with open_stream(http, capped_server, other) as theirs:
            assert theirs.status_code == 200
