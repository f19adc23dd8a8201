"""The serving loop: a caller's request that arrives during another caller's backlog is served among it."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from app.serving import worker as worker_module
from app.serving.fair_queue import FairQueue
from app.serving.http11 import Outcome
from app.serving.run_slot import RunSlot
from app.serving.worker import ConnectionWorker


class FakeConnection:
    """What the serving loop needs of a ClientConnection; serving it records its name and runs a hook."""

    def __init__(self, name: str, caller: str, served: list[str], hook: Callable[[], None]) -> None:
        self.name = name
        self.caller = caller
        self.client_side, self.sock = socket.socketpair()
        self.fd = self.sock.fileno()
        self.armed = True
        self.closing_until = 0.0
        self.last_active = time.monotonic()
        self._served = served
        self._hook = hook

    def serve_ready(self) -> Outcome:
        self.sock.recv(100)
        self._served.append(self.name)
        self._hook()
        return Outcome.KEEP

    def close(self, outcome: Outcome) -> None:
        self.sock.close()
        self.client_side.close()


@pytest.fixture
def worker() -> Iterator[ConnectionWorker]:
    """A ConnectionWorker with what its serving loop uses (a poller, a wake pipe, a slot) and no gunicorn."""
    worker = ConnectionWorker.__new__(ConnectionWorker)
    worker.cfg = SimpleNamespace(keepalive=30, worker_connections=100)
    worker.alive = True
    worker.slot = RunSlot()
    worker.connections = {}
    worker._ready = FairQueue()
    worker._returned = deque()
    worker._poller = select.epoll()
    worker._wake_read, worker._wake_write = os.pipe()
    os.set_blocking(worker._wake_read, False)
    os.set_blocking(worker._wake_write, False)
    worker._poller.register(worker._wake_read, select.EPOLLIN)
    worker._listeners = {}
    worker._listening = False
    worker._stopping = False
    worker._stop_started = 0.0
    yield worker
    for connection in worker.connections.values():
        connection.close(Outcome.CLOSE)
    worker._poller.close()
    os.close(worker._wake_read)
    os.close(worker._wake_write)


def test_a_request_arriving_during_a_backlog_goes_ahead_of_the_backlogs_rest(
    worker: ConnectionWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ask the poller between every two requests of a backlog (in production at most every 2 ms).
    monkeypatch.setattr(worker_module, "BACKLOG_POLL_INTERVAL", 0.0)
    served: list[str] = []
    connections: dict[str, FakeConnection] = {}

    def after_serving() -> None:
        if served == ["abuser1"]:
            connections["good"].client_side.sendall(b"x")  # arrives while the abuser's backlog is served
        if len(served) == len(connections):
            worker.slot.step_aside()  # all served: the loop ends

    for name, caller in (("abuser1", "abuser"), ("abuser2", "abuser"), ("abuser3", "abuser"), ("good", "good")):
        connection = FakeConnection(name, caller, served, after_serving)
        connections[name] = connection
        worker.connections[connection.fd] = connection  # type: ignore[assignment]
        worker._poller.register(connection.fd, worker_module._READABLE)
    for name in ("abuser1", "abuser2", "abuser3"):
        connections[name].client_side.sendall(b"x")

    def serve() -> None:
        worker.slot.take()
        worker._serve_while_holding()

    loop = threading.Thread(target=serve, daemon=True)
    loop.start()
    loop.join(5)
    assert not loop.is_alive(), f"the loop did not serve every connection: {served}"
    assert served[:2] == ["abuser1", "good"]
    assert sorted(served[2:]) == ["abuser2", "abuser3"]
