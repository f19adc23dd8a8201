"""The pool of serving loops: reuse, fork safety, a bounded number of threads, clean shutdown."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from flask import Flask

from app.bridge.event_loop import LoopPool
from tests.conftest import Tokens
from tests.support.jsonrpc import HANDSHAKE
from tests.support.jsonrpc import call_tool


class CountingManager:
    entered = 0
    exited = 0

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        CountingManager.entered += 1
        try:
            yield
        finally:
            CountingManager.exited += 1


def test_loops_are_reused() -> None:
    pool = LoopPool(lambda: (CountingManager(),))  # type: ignore[arg-type,return-value]
    first = pool.acquire()
    pool.release(first)
    assert pool.acquire() is first
    second = pool.acquire()
    assert second is not first
    assert pool.created == 2
    pool.release(first)
    pool.release(second)
    pool.close()


def test_a_forked_child_starts_over(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = LoopPool(lambda: (CountingManager(),))  # type: ignore[arg-type,return-value]
    parent_loop = pool.acquire()
    pool.release(parent_loop)
    real_pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: real_pid + 1)
    child_loop = pool.acquire()
    assert child_loop is not parent_loop
    assert pool.created == 1
    pool.release(child_loop)
    pool.close()
    monkeypatch.undo()
    parent_loop.close()


def anyio_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "AnyIO worker thread")


def test_close_leaves_the_manager_and_ends_its_threads() -> None:
    before = set(threading.enumerate())
    entered, exited = CountingManager.entered, CountingManager.exited
    pool = LoopPool(lambda: (CountingManager(),))  # type: ignore[arg-type,return-value]
    serving = pool.acquire()
    pool.release(serving)
    started = [t for t in set(threading.enumerate()) - before if t.name == "AnyIO worker thread"]
    assert len(started) == 1  # anyio's worker thread for sync tools, kept by the loop
    pool.close()
    started[0].join(5)
    assert not started[0].is_alive()
    assert (CountingManager.entered - entered, CountingManager.exited - exited) == (1, 1)
    assert serving.loop.is_closed()


def test_sync_tools_reuse_worker_threads(app: Flask, tokens: Tokens) -> None:
    client = app.test_client()
    headers, body = call_tool("list_todos", token=tokens.mint("todo:read"))
    client.post("/mcp", headers=headers, data=body).close()
    threads = anyio_threads()
    for _ in range(100):
        response = client.post("/mcp", headers=headers, data=body)
        assert response.status_code == 200
        response.close()
    assert anyio_threads() <= threads
    assert app.extensions["mcp_bridge"].loops.created == 1


def test_requests_from_ever_new_threads_leave_no_polling_tasks_behind(app: Flask, tokens: Tokens) -> None:
    """Under ``flask run`` every request comes on a new thread."""
    headers, body = call_tool("greet_user", {"name": "t"}, era=HANDSHAKE, token=tokens.mint())

    def one_request() -> None:
        response = app.test_client().post("/mcp", headers=headers, data=body)
        assert response.status_code == 200
        response.close()

    for _ in range(5):
        thread = threading.Thread(target=one_request)
        thread.start()
        thread.join(10)
    pool = app.extensions["mcp_bridge"].loops
    assert pool.created == 1
    (serving,) = pool.idle
    pending = [task.get_coro().__qualname__ for task in asyncio.all_tasks(serving.loop)]
    assert "_shutdown_watcher" not in pending
