"""Resumable streams in stateful mode under gunicorn: a handshake-era client that comes back with Last-Event-ID
gets what it missed, from memory (the default) or from Debian's redis-server."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import httpx2
import pytest
from redis import Redis

from app.event_store import REDIS_KEY_PREFIX
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import HANDSHAKE
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers
from tests.support.mcp_client import connect
from tests.support.mcp_client import text_of
from tests.support.redis import running_redis
from tests.support.servers import RunningServer
from tests.support.servers import start_app
from tests.support.sse import Event
from tests.support.sse import EventStream

pytestmark = [pytest.mark.e2e]

TOOLS = "flask_mcp_examples:register,tests.support.stateful_tools:register"
INITIALIZE = request_body(
    "initialize",
    {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "resuming", "version": "1"}},
    era=HANDSHAKE,
)
EVENT_ID = re.compile(r"[0-9a-f]{24}-\d+:\d+")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_redis(tmp_path_factory.mktemp("redis-resume")) as url:
        yield url


@pytest.fixture(scope="module", params=["memory", "redis"])
def resumable(
    request: pytest.FixtureRequest, issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    store = {"MCP_EVENT_STORE": request.getfixturevalue("redis_url")} if request.param == "redis" else {}
    server = start_app(
        issuer,
        tmp_path_factory.mktemp(f"resumable-{request.param}"),
        workers=1,
        MCP_STATEFUL="1",
        MCP_TOOLS=TOOLS,
        MCP_SSE_RETRY_MS="500",
        **store,
    )
    yield server
    server.stop()


def open_session(http: httpx2.Client, server: RunningServer, token: str) -> str:
    opened = http.post(server.url, headers=request_headers("initialize", era=HANDSHAKE, token=token), json=INITIALIZE)
    assert opened.status_code == 200
    session = opened.headers["mcp-session-id"]
    headers = {**request_headers("notifications/initialized", era=HANDSHAKE, token=token), "Mcp-Session-Id": session}
    http.post(server.url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    return session


def resume(http: httpx2.Client, server: RunningServer, token: str, session: str, last_event_id: str) -> list[Event]:
    """GET with Last-Event-ID; the events up to the call's result (the stream itself stays open for more)."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "text/event-stream",
        "MCP-Protocol-Version": HANDSHAKE,
        "Mcp-Session-Id": session,
        "Last-Event-ID": last_event_id,
    }
    received = []
    with http.stream("GET", server.url, headers=headers) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = EventStream(stream)
        while True:
            event = events.next_event()
            received.append(event)
            if event.data and "result" in event.json():
                return received


def test_a_client_that_lost_its_stream_gets_every_event_it_missed(resumable: RunningServer) -> None:
    token = resumable.token("todo:read", sub="resumes")
    call = request_body(
        "tools/call", {"name": "count_to", "arguments": {"n": 5}, "_meta": {"progressToken": 3}}, era=HANDSHAKE, id=2
    )
    with httpx2.Client(timeout=10) as http:
        session = open_session(http, resumable, token)
        headers = {**request_headers("tools/call", era=HANDSHAKE, token=token), "Mcp-Session-Id": session}
        with http.stream("POST", resumable.url, headers=headers, json=call) as stream:
            events = EventStream(stream)
            priming, first = events.next_event(), events.next_event()
        # The connection is gone after one progress event; the tool goes on (2025-11-25: a disconnect is
        # not a cancellation) and the store keeps what it sends.
        time.sleep(1.3)
        missed = resume(http, resumable, token, session, first.id or "")
    assert (priming.data, priming.retry, priming.event) == ("", 500, "message")
    assert priming.id is not None and EVENT_ID.fullmatch(priming.id), priming.id
    assert first.json()["params"]["progress"] == 1
    assert [event.json().get("params", {}).get("progress") for event in missed] == [2, 3, 4, 5, None]
    assert missed[-1].json() == {
        "jsonrpc": "2.0",
        "id": 2,
        "result": {
            "content": [{"type": "text", "text": "Counted to 5."}],
            "structuredContent": {"result": "Counted to 5."},
            "isError": False,
        },
    }
    # Each event keeps the id it was first sent with: the stream is the same one, resumed.
    stream_name = (first.id or "").rpartition(":")[0]
    assert all((event.id or "").rpartition(":")[0] == stream_name for event in missed)


def test_another_sessions_event_id_replays_nothing(resumable: RunningServer) -> None:
    token = resumable.token("todo:read", sub="two-sessions")
    call = request_body(
        "tools/call", {"name": "count_to", "arguments": {"n": 2}, "_meta": {"progressToken": 3}}, era=HANDSHAKE, id=2
    )
    with httpx2.Client(timeout=10) as http:
        first, second = open_session(http, resumable, token), open_session(http, resumable, token)
        headers = {**request_headers("tools/call", era=HANDSHAKE, token=token), "Mcp-Session-Id": first}
        answered = http.post(resumable.url, headers=headers, json=call)
        ids = re.findall(r"^id: (\S+)", answered.text, re.MULTILINE)
        replayed = http.get(
            resumable.url,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "text/event-stream",
                "MCP-Protocol-Version": HANDSHAKE,
                "Mcp-Session-Id": second,
                "Last-Event-ID": ids[0],
            },
        )
    assert len(ids) == 4  # priming, two steps, the result
    assert replayed.status_code == 200
    assert "data: {" not in replayed.text


@pytest.mark.anyio
async def test_the_sdk_client_resumes_a_stream_the_server_closed(resumable: RunningServer) -> None:
    """SEP-1699 polling: the tool closes its stream after step 1; the client comes back after the retry hint."""
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with connect(resumable.url, resumable.token(), era=HANDSHAKE) as client:
        started = time.monotonic()
        result = await client.call_tool("count_across_reconnect", {"n": 4}, progress_callback=on_progress)
        took = time.monotonic() - started
    assert text_of(result) == "Counted to 4 across a reconnect."
    assert progress == [1, 2, 3, 4]
    assert took >= 0.5  # the client waited as the priming event's retry field (500 ms) told it to
    assert '"GET /mcp HTTP/1.1" 200' in resumable.process.log()


@pytest.mark.parametrize("resumable", ["redis"], indirect=True)
def test_redis_holds_each_stream_with_its_bounds(resumable: RunningServer, redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        keys = [key.decode() for key in client.scan_iter(REDIS_KEY_PREFIX + "*")]
        ttls = [client.pttl(key) for key in keys]
        longest = max(client.xlen(key) for key in keys)
        sample = client.xrange(keys[0], count=1)
    finally:
        client.close()
    assert keys and all(re.fullmatch(re.escape(REDIS_KEY_PREFIX) + r"[0-9a-f]{24}-\d+", key) for key in keys)
    assert all(0 < ttl <= 300_000 for ttl in ttls), ttls
    assert longest <= 1000
    [(_, fields)] = sample
    assert set(fields) == {b"m", b"t"}
    assert fields[b"m"] == b"" or json.loads(fields[b"m"])["jsonrpc"] == "2.0"


def test_a_redis_gone_mid_session_loses_no_event_and_the_log_says_so(
    issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Redis stops while a session runs: the events are kept in the worker, the resumed client misses none."""
    call = request_body(
        "tools/call", {"name": "count_to", "arguments": {"n": 5}, "_meta": {"progressToken": 3}}, era=HANDSHAKE, id=2
    )
    with running_redis(tmp_path_factory.mktemp("redis-gone")) as url:
        server = start_app(
            issuer,
            tmp_path_factory.mktemp("resumable-redis-gone"),
            workers=1,
            MCP_STATEFUL="1",
            MCP_TOOLS=TOOLS,
            MCP_EVENT_STORE=url,
        )
    try:
        token = server.token("todo:read", sub="redis-gone")
        with httpx2.Client(timeout=10) as http:
            session = open_session(http, server, token)
            headers = {**request_headers("tools/call", era=HANDSHAKE, token=token), "Mcp-Session-Id": session}
            with http.stream("POST", server.url, headers=headers, json=call) as stream:
                assert stream.status_code == 200
                events = EventStream(stream)
                _, first = events.next_event(), events.next_event()
            time.sleep(1.3)
            missed = resume(http, server, token, session, first.id or "")
        log = server.process.log()
    finally:
        server.stop()
    assert first.json()["params"]["progress"] == 1
    assert [event.json().get("params", {}).get("progress") for event in missed] == [2, 3, 4, 5, None]
    assert missed[-1].json()["result"]["structuredContent"] == {"result": "Counted to 5."}
    assert "event store: Redis failed while writing events (ConnectionError: " in log
    assert "for 5 s events are kept in this process's memory only" in log
    assert "no longer kept" not in log
    assert '" 500 ' not in log
