"""Per-caller caps: requests in flight, streams and sessions one caller may hold; 429 naming the cap."""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from prometheus_client import REGISTRY
from werkzeug.test import TestResponse

from app import create_app
from app import stop_worker
from app.principal_caps import MemoryCounters
from app.principal_caps import SessionLedger
from app.principal_caps import refusal
from app.settings import Settings
from tests.conftest import RESOURCE
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import HANDSHAKE
from tests.support.jsonrpc import call_tool
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers

INITIALIZE = request_body(
    "initialize",
    {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
    era=HANDSHAKE,
)
LISTEN = request_body("subscriptions/listen", {"notifications": {"toolsListChanged": True}})


def make_app(issuer: MockIssuer, tmp_path: Path, **env: str) -> Flask:
    settings = {"MCP_RESOURCE_URL": RESOURCE, "MCP_ISSUER": issuer.issuer, "MCP_INSTANCE_PATH": str(tmp_path)}
    return create_app(Settings.from_mapping({**settings, **env}))


@pytest.fixture
def apps() -> Iterator[list[Flask]]:
    made: list[Flask] = []
    yield made
    for app in made:
        stop_worker(app)


def refusals(cap: str) -> float:
    return REGISTRY.get_sample_value("mcp_cap_refusals_total", {"cap": cap}) or 0.0


def assert_over_cap(response: TestResponse, cap: str, limit: int, held: str, variable: str, retry_after: str) -> None:
    assert response.status_code == 429
    assert response.headers["Retry-After"] == retry_after
    assert response.headers["Cache-Control"] == "no-store"
    assert response.content_type == "application/json"
    assert response.get_json() == {
        "error": "too_many_requests",
        "error_description": f"This caller already holds {held} (cap {variable})",
        "cap": cap,
        "limit": limit,
    }
    assert "WWW-Authenticate" not in response.headers


def long_call(client: Any, token: str) -> TestResponse:
    """A tools/call that streams (count_to reports progress), left open: its response is not read or closed."""
    headers, _ = call_tool("count_to", token=token)
    body = request_body("tools/call", {"name": "count_to", "arguments": {"n": 50}, "_meta": {"progressToken": "p"}})
    response = client.post("/mcp", headers=headers, json=body, buffered=False)
    assert response.status_code == 200
    assert response.content_type.startswith("text/event-stream")
    return response


def quick_call(client: Any, token: str) -> TestResponse:
    headers, body = call_tool("greet_user", {"name": "x"}, token=token)
    response = client.post("/mcp", headers=headers, data=body)
    response.close()
    return response


class TestInFlight:
    def test_a_caller_at_the_cap_is_refused_and_others_are_not(
        self, issuer: MockIssuer, tmp_path: Path, apps: list[Flask]
    ) -> None:
        app = make_app(issuer, tmp_path, MCP_CAP_IN_FLIGHT="2")
        apps.append(app)
        client = app.test_client()
        alice, bob = issuer.mint(RESOURCE, sub="alice"), issuer.mint(RESOURCE, sub="bob")
        before = refusals("in_flight")
        first, second = long_call(client, alice), long_call(client, alice)
        refused = quick_call(client, alice)
        assert_over_cap(
            refused, "in_flight", 2, "2 requests in flight; retry when one has finished", "MCP_CAP_IN_FLIGHT", "1"
        )
        # A new token of the same user is the same caller; another user is not held back at all.
        assert quick_call(client, issuer.mint(RESOURCE, sub="alice")).status_code == 429
        assert quick_call(client, bob).status_code == 200
        assert refusals("in_flight") == before + 2
        first.close()  # the stream's end gives its place back
        assert quick_call(client, alice).status_code == 200
        second.close()

    def test_every_answer_gives_its_place_back(self, issuer: MockIssuer, tmp_path: Path, apps: list[Flask]) -> None:
        app = make_app(issuer, tmp_path, MCP_CAP_IN_FLIGHT="1")
        apps.append(app)
        client = app.test_client()
        token = issuer.mint(RESOURCE)
        statuses = [quick_call(client, token).status_code for _ in range(5)]
        # Refused inside the hook after admission (403 step-up), and by the SDK (a malformed body): freed too.
        headers, body = call_tool("add_todo", {"title": "x"}, token=token)
        step_up = client.post("/mcp", headers=headers, data=body)
        step_up.close()
        bad = client.post("/mcp", headers=request_headers("tools/list", token=token), data=b"{not json")
        bad.close()
        assert statuses == [200] * 5
        assert (step_up.status_code, bad.status_code) == (403, 400)
        assert app.extensions["mcp_caps"].counters.in_use() == {}

    def test_unauthenticated_requests_hold_nothing(self, issuer: MockIssuer, tmp_path: Path, apps: list[Flask]) -> None:
        app = make_app(issuer, tmp_path, MCP_CAP_IN_FLIGHT="1", MCP_RATE_LIMIT="off")
        apps.append(app)
        client = app.test_client()
        assert [quick_call(client, "junk").status_code for _ in range(3)] == [401] * 3
        assert app.extensions["mcp_caps"].counters.in_use() == {}

    def test_off(self, issuer: MockIssuer, tmp_path: Path, apps: list[Flask]) -> None:
        app = make_app(issuer, tmp_path, MCP_CAP_IN_FLIGHT="off", MCP_CAP_STREAMS="off", MCP_CAP_SESSIONS="off")
        apps.append(app)
        assert "mcp_caps" not in app.extensions
        client = app.test_client()
        token = issuer.mint(RESOURCE)
        held = [long_call(client, token) for _ in range(3)]
        assert quick_call(client, token).status_code == 200
        for response in held:
            response.close()


class TestStreams:
    def test_listen_streams_stateless(self, issuer: MockIssuer, tmp_path: Path, apps: list[Flask]) -> None:
        app = make_app(issuer, tmp_path, MCP_CAP_STREAMS="1")
        apps.append(app)
        client = app.test_client()
        token = issuer.mint(RESOURCE)
        headers = request_headers("subscriptions/listen", token=token)
        listening = client.post("/mcp", headers=headers, json=LISTEN, buffered=False)
        assert listening.status_code == 200
        assert listening.content_type.startswith("text/event-stream")
        before = refusals("streams")
        second = client.post("/mcp", headers=headers, json=LISTEN)
        assert_over_cap(
            second, "streams", 1, "1 open streams; close one before opening another", "MCP_CAP_STREAMS", "5"
        )
        assert refusals("streams") == before + 1
        assert quick_call(client, token).status_code == 200  # plain requests are not streams
        listening.close()
        again = client.post("/mcp", headers=headers, json=LISTEN, buffered=False)
        assert again.status_code == 200
        again.close()
        assert app.extensions["mcp_caps"].counters.in_use() == {}


def initialize(client: Any, token: str) -> TestResponse:
    """An initialize read to its end, as a client does (a stream closed before its answer ends its session)."""
    response = client.post("/mcp", headers=request_headers("initialize", era=HANDSHAKE, token=token), json=INITIALIZE)
    response.get_data()
    response.close()
    return response


def session_headers(token: str, session: str, **extra: str) -> dict[str, str]:
    return {**request_headers("ping", era=HANDSHAKE, token=token), "Mcp-Session-Id": session, **extra}


@pytest.fixture
def stateful(issuer: MockIssuer, tmp_path: Path, apps: list[Flask]) -> Flask:
    app = make_app(issuer, tmp_path, MCP_STATEFUL="1", MCP_CAP_SESSIONS="2", MCP_CAP_STREAMS="1")
    apps.append(app)
    return app


class TestSessions:
    def test_a_caller_opens_no_more_sessions_than_the_cap(self, stateful: Flask, issuer: MockIssuer) -> None:
        client = stateful.test_client()
        alice, bob = issuer.mint(RESOURCE, sub="alice"), issuer.mint(RESOURCE, sub="bob")
        opened = [initialize(client, alice) for _ in range(2)]
        assert [r.status_code for r in opened] == [200, 200]
        before = refusals("sessions")
        refused = initialize(client, alice)
        assert_over_cap(
            refused,
            "sessions",
            2,
            "2 open sessions; end one (DELETE) or let one expire",
            "MCP_CAP_SESSIONS",
            "30",
        )
        assert refusals("sessions") == before + 1
        assert initialize(client, bob).status_code == 200  # another caller has room of their own
        # Requests within an open session are not session openings.
        session = opened[0].headers["Mcp-Session-Id"]
        ping = client.post("/mcp", headers=session_headers(alice, session), json=request_body("ping", era=HANDSHAKE))
        ping.close()
        assert ping.status_code == 200
        ended = client.delete("/mcp", headers=session_headers(alice, session))
        ended.close()
        assert ended.status_code == 200
        assert initialize(client, alice).status_code == 200  # its place is free again

    def test_a_refused_opening_leaves_no_session_counted(self, stateful: Flask, issuer: MockIssuer) -> None:
        client = stateful.test_client()
        token = issuer.mint(RESOURCE)
        # An initialize the SDK refuses (it must accept event streams too): no session opens, none stays counted.
        headers = {**request_headers("initialize", era=HANDSHAKE, token=token), "Accept": "application/json"}
        for _ in range(3):
            response = client.post("/mcp", headers=headers, json=INITIALIZE)
            response.close()
            assert response.status_code == 406
        assert [initialize(client, token).status_code for _ in range(2)] == [200, 200]

    def test_the_2026_era_opens_no_session_and_is_not_counted(self, stateful: Flask, issuer: MockIssuer) -> None:
        client = stateful.test_client()
        token = issuer.mint(RESOURCE)
        assert [initialize(client, token).status_code for _ in range(2)] == [200, 200]
        modern = client.post(
            "/mcp", headers=request_headers("tools/list", token=token), json=request_body("tools/list")
        )
        modern.close()
        assert modern.status_code == 200

    def test_get_streams_are_streams(self, stateful: Flask, issuer: MockIssuer) -> None:
        client = stateful.test_client()
        token = issuer.mint(RESOURCE)
        sessions = [initialize(client, token).headers["Mcp-Session-Id"] for _ in range(2)]
        get = {"Accept": "text/event-stream"}
        stream = client.get("/mcp", headers=session_headers(token, sessions[0], **get), buffered=False)
        assert stream.status_code == 200
        refused = client.get("/mcp", headers=session_headers(token, sessions[1], **get))
        assert_over_cap(
            refused, "streams", 1, "1 open streams; close one before opening another", "MCP_CAP_STREAMS", "5"
        )
        stream.close()
        second = client.get("/mcp", headers=session_headers(token, sessions[1], **get), buffered=False)
        assert second.status_code == 200
        second.close()


def test_the_session_manager_still_has_the_methods_the_session_cap_overrides() -> None:
    """SessionCountingManager overrides two private methods of the SDK's StreamableHTTPSessionManager: if an SDK
    upgrade renames them, the session cap would silently count nothing."""
    admit = getattr(StreamableHTTPSessionManager, "_admit_session", None)
    discard = getattr(StreamableHTTPSessionManager, "_discard_session", None)
    assert admit is not None, "mcp's StreamableHTTPSessionManager._admit_session is gone: update SessionCountingManager"
    assert discard is not None, (
        "mcp's StreamableHTTPSessionManager._discard_session is gone: update SessionCountingManager"
    )
    assert list(inspect.signature(admit).parameters) == ["self", "requestor"], (
        "StreamableHTTPSessionManager._admit_session changed its signature: update SessionCountingManager"
    )
    assert list(inspect.signature(discard).parameters) == ["self", "session_id", "transport"], (
        "StreamableHTTPSessionManager._discard_session changed its signature: update SessionCountingManager"
    )
    assert inspect.iscoroutinefunction(discard), (
        "_discard_session is no longer a coroutine: update SessionCountingManager"
    )


class TestUnits:
    def test_memory_counters_count_all_or_nothing(self) -> None:
        counters = MemoryCounters()
        key = ("https://issuer", "alice")
        both = (("in_flight", key, 3), ("streams", key, 1))
        assert counters.acquire(both) is None
        assert counters.acquire(both) == "streams"
        assert (counters.held("in_flight", key), counters.held("streams", key)) == (1, 1)
        counters.release(both)
        assert counters.in_use() == {}

    def test_memory_counters_never_drift_under_concurrent_threads(self) -> None:
        counters = MemoryCounters()
        key = ("https://issuer", "alice")
        wanted = (("in_flight", key, 4),)
        seen: list[int] = []

        def hammer() -> None:
            for _ in range(2000):
                if counters.acquire(wanted) is None:
                    seen.append(counters.held("in_flight", key))
                    counters.release(wanted)

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert seen and max(seen) <= 4
        assert counters.in_use() == {}

    def test_session_ledger_counts_reservations_and_sessions(self) -> None:
        ledger = SessionLedger(2)
        key = ("https://issuer", "alice")
        assert ledger.reserve(key) and ledger.reserve(key)
        assert not ledger.reserve(key)  # two openings in flight fill the cap
        ledger.opened("s1", key)
        ledger.unreserve(key)
        ledger.unreserve(key)  # the second opening failed: no session
        assert ledger.open_sessions(key) == 1
        ledger.closed("s1")
        ledger.closed("s1")  # the SDK may discard a session twice
        assert ledger.open_sessions(key) == 0
        assert ledger.reserve(key)

    def test_the_refusal_body(self) -> None:
        response = refusal("in_flight", 32)
        assert json.loads(response.get_data()) == {
            "error": "too_many_requests",
            "error_description": "This caller already holds 32 requests in flight; retry when one has finished "
            "(cap MCP_CAP_IN_FLIGHT)",
            "cap": "in_flight",
            "limit": 32,
        }
