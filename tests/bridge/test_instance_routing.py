"""Session ids with the instance's name: prefixed on the way out, checked and stripped on the way in."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.bridge.instance_routing import UNKNOWN_SESSION
from app.bridge.instance_routing import InstanceSessionIds

SDK_ID = b"3f2a9c0e6b5d4e7f8a1b2c3d4e5f6a7b"
IDS = InstanceSessionIds("8001")


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def noop_receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def scope_with(headers: list[tuple[bytes, bytes]], query: bytes = b"") -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/mcp", "headers": headers, "query_string": query}


class TestInward:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            pytest.param(b"8001." + SDK_ID, SDK_ID, id="this instance"),
            pytest.param(b"8000." + SDK_ID, UNKNOWN_SESSION, id="another instance"),
            pytest.param(SDK_ID, UNKNOWN_SESSION, id="the bare SDK id"),
            pytest.param(b"8001.", UNKNOWN_SESSION, id="the name alone"),
            pytest.param(b"80011." + SDK_ID, UNKNOWN_SESSION, id="a longer name"),
            pytest.param(b"", UNKNOWN_SESSION, id="empty"),
        ],
    )
    def test_only_an_id_this_instance_handed_out_reaches_the_sdk(self, value: bytes, expected: bytes) -> None:
        assert IDS.inward(value) == expected

    def test_the_unknown_session_is_the_nil_uuid_which_uuid4_never_mints(self) -> None:
        import uuid

        assert uuid.UUID(hex=UNKNOWN_SESSION.decode()) == uuid.UUID(int=0)
        assert uuid.UUID(hex=UNKNOWN_SESSION.decode()).version is None


class TestStreamableHTTP:
    def test_the_header_is_routed_in_and_prefixed_out(self) -> None:
        seen: list[Any] = []
        sent: list[dict[str, Any]] = []

        async def sdk(scope: Any, receive: Any, send: Any) -> None:
            seen.append(scope["headers"])
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"mcp-session-id", SDK_ID)],
                }
            )
            await send({"type": "http.response.body", "body": b"data: x\n\n", "more_body": False})

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        app = IDS.streamable_http(sdk)
        headers = [(b"accept", b"text/event-stream"), (b"mcp-session-id", b"8001." + SDK_ID)]
        run(app(scope_with(headers), noop_receive, send))
        assert seen == [[(b"accept", b"text/event-stream"), (b"mcp-session-id", SDK_ID)]]
        assert sent == [
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"mcp-session-id", b"8001." + SDK_ID)],
            },
            {"type": "http.response.body", "body": b"data: x\n\n", "more_body": False},
        ]

    def test_a_request_that_names_no_session_is_passed_on_as_it_came(self) -> None:
        seen: list[Any] = []

        async def sdk(scope: Any, receive: Any, send: Any) -> None:
            seen.append(scope)
            await send({"type": "http.response.start", "status": 202, "headers": []})

        async def send(message: dict[str, Any]) -> None:
            pass

        scope = scope_with([(b"accept", b"application/json")])
        run(IDS.streamable_http(sdk)(scope, noop_receive, send))
        assert seen == [scope] and seen[0] is scope

    def test_a_foreign_session_reaches_the_sdk_as_the_unknown_session(self) -> None:
        seen: list[Any] = []

        async def sdk(scope: Any, receive: Any, send: Any) -> None:
            seen.append(dict(scope["headers"])[b"mcp-session-id"])

        async def send(message: dict[str, Any]) -> None:
            pass

        run(IDS.streamable_http(sdk)(scope_with([(b"mcp-session-id", b"8000." + SDK_ID)]), noop_receive, send))
        assert seen == [UNKNOWN_SESSION]


class TestHTTPAndSSE:
    def test_the_endpoint_event_names_the_routed_session_and_nothing_else_changes(self) -> None:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        announced = IDS.announced(send)
        endpoint = b"event: endpoint\r\ndata: /mcp/messages/?session_id=" + SDK_ID + b"\r\n\r\n"
        later = b'event: message\r\ndata: {"session_id=' + SDK_ID + b'"}\r\n\r\n'

        async def stream() -> None:
            await announced({"type": "http.response.start", "status": 200, "headers": []})
            await announced({"type": "http.response.body", "body": endpoint, "more_body": True})
            await announced({"type": "http.response.body", "body": later, "more_body": True})

        run(stream())
        assert [message.get("body") for message in sent] == [
            None,
            b"event: endpoint\r\ndata: /mcp/messages/?session_id=8001." + SDK_ID + b"\r\n\r\n",
            later,
        ]

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            pytest.param(b"session_id=8001." + SDK_ID, b"session_id=" + SDK_ID, id="routed"),
            pytest.param(b"session_id=8000." + SDK_ID, b"session_id=" + UNKNOWN_SESSION, id="another instance"),
            pytest.param(b"session_id=" + SDK_ID, b"session_id=" + UNKNOWN_SESSION, id="bare"),
            pytest.param(
                b"a=1&session_id=8001." + SDK_ID + b"&session_id=" + SDK_ID,
                b"a=1&session_id=" + SDK_ID + b"&session_id=" + UNKNOWN_SESSION,
                id="every one of several",
            ),
            pytest.param(b"xsession_id=8001." + SDK_ID, b"xsession_id=8001." + SDK_ID, id="another parameter"),
            pytest.param(b"", b"", id="none"),
        ],
    )
    def test_the_message_endpoint_gets_the_sdk_id_back(self, query: bytes, expected: bytes) -> None:
        assert IDS.posted(scope_with([], query))["query_string"] == expected
