"""The WSGI <-> ASGI translation, with small ASGI apps standing in for the SDK."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator
from collections.abc import Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder

from app.bridge.asgi_to_wsgi import ASGIExchange
from app.bridge.asgi_to_wsgi import StreamingBody
from app.bridge.asgi_to_wsgi import asgi_scope
from app.bridge.event_loop import ServingLoop


class IdleManager:
    """What ServingLoop needs of a session manager."""

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        yield


@pytest.fixture
def serving() -> Iterator[ServingLoop]:
    loop = ServingLoop(IdleManager())  # type: ignore[arg-type]
    yield loop
    loop.close()


def exchange(serving: ServingLoop, app: Any, body: bytes = b"{}") -> ASGIExchange:
    return ASGIExchange(serving, app, {"type": "http"}, body, contextvars.Context())


def test_scope_carries_the_request_but_not_the_token() -> None:
    environ = EnvironBuilder(
        method="POST",
        path="/mcp",
        query_string="a=1",
        headers={"Authorization": "Bearer secret", "Mcp-Method": "tools/list", "Accept": "text/event-stream"},
        data=b"{}",
        content_type="application/json",
        environ_base={"REMOTE_ADDR": "10.1.2.3", "REMOTE_PORT": "5555"},
    ).get_environ()
    scope = asgi_scope(environ, "/mcp", {"user": "u"})
    assert scope["method"] == "POST"
    assert scope["path"] == "/mcp"
    assert scope["query_string"] == b"a=1"
    assert scope["client"] == ("10.1.2.3", 5555)
    assert scope["user"] == "u"
    assert sorted(scope["headers"]) == [
        (b"accept", b"text/event-stream"),
        (b"content-length", b"2"),
        (b"content-type", b"application/json"),
        (b"host", b"localhost"),
        (b"mcp-method", b"tools/list"),
    ]


def test_a_plain_answer(serving: ServingLoop) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        request = await receive()
        await send({"type": "http.response.start", "status": 201, "headers": [(b"x-a", b"1")]})
        await send({"type": "http.response.body", "body": request["body"][::-1]})

    ex = exchange(serving, app, b"abc")
    assert ex.next_message() == {"type": "http.response.start", "status": 201, "headers": [(b"x-a", b"1")]}
    assert ex.next_message() == {"type": "http.response.body", "body": b"cba"}
    ex.close()
    assert ex.next_message() is None


def test_chunks_stream_as_they_are_sent(serving: ServingLoop) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for n in range(3):
            await asyncio.sleep(0.1)
            await send({"type": "http.response.body", "body": b"%d" % n, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    ex = exchange(serving, app)
    ex.next_message()
    start = time.monotonic()
    arrivals = [(chunk, time.monotonic() - start) for chunk in StreamingBody(ex)]
    assert [chunk for chunk, _ in arrivals] == [b"0", b"1", b"2"]
    assert arrivals[0][1] < 0.19 < arrivals[1][1] < 0.29 < arrivals[2][1]


def test_closing_early_disconnects_and_cancels(serving: ServingLoop) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()

        async def watch() -> None:
            seen.append((await receive())["type"])

        asyncio.get_running_loop().create_task(watch())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                await send({"type": "http.response.body", "body": b".", "more_body": True})
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            seen.append("cancelled")
            await send({"type": "http.response.body", "body": b"late"})  # a no-op, not an error
            raise

    ex = exchange(serving, app)
    ex.next_message()
    body = StreamingBody(ex)
    assert next(body) == b"."
    started = time.monotonic()
    body.close()
    assert time.monotonic() - started < 1
    assert seen == ["http.disconnect", "cancelled"]


def test_a_stream_with_a_deadline_ends_then_and_its_handler_is_cancelled(serving: ServingLoop) -> None:
    """A standalone GET stream's lifetime: the body ends cleanly at the deadline, as if the app had finished,
    whether the app is silent or still sending; closing it cancels the handler."""
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            await send({"type": "http.response.body", "body": b"event\n", "more_body": True})
            await asyncio.sleep(3600)  # a silent stream
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    ex = exchange(serving, app)
    ex.next_message()
    started = time.monotonic()
    body = StreamingBody(ex, deadline=started + 0.3)
    assert list(body) == [b"event\n"]
    assert 0.25 < time.monotonic() - started < 1.5
    body.close()
    assert seen == ["cancelled"]


def test_a_deadline_already_passed_ends_the_stream_at_once(serving: ServingLoop) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(3600)

    ex = exchange(serving, app)
    ex.next_message()
    body = StreamingBody(ex, b"first", deadline=time.monotonic() - 1)
    assert list(body) == [b"first"]
    body.close()


def test_an_app_that_fails_before_answering(serving: ServingLoop, caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="app.bridge.asgi_to_wsgi"):
        ex = exchange(serving, app)
        assert ex.next_message() is None
        ex.close()
    assert [record.getMessage() for record in caplog.records] == ["the MCP handler failed"]


def test_the_handler_context_reaches_the_app(serving: ServingLoop) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")
    context = contextvars.Context()
    context.run(var.set, "caller")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": var.get().encode()})

    ex = ASGIExchange(serving, app, {"type": "http"}, b"", context)
    ex.next_message()
    assert ex.next_message()["body"] == b"caller"
    ex.close()
    assert var.get("unset") == "unset"
