"""The connection worker's life under gunicorn's arbiter: stop, heartbeat, restarts, limits, idle connections."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving.test_http11 import HOST
from tests.serving.test_http11 import WORKER
from tests.serving.test_http11 import Served
from tests.serving.test_http11 import serve
from tests.support.load import children
from tests.support.raw_http import Reader

pytestmark = pytest.mark.e2e


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start the worker under gunicorn with these options; stopped at the end of the test, whatever happened."""
    started: list[Served] = []

    def starter(*options: str) -> Served:
        served = serve(WORKER, tmp_path, *options)
        started.append(served)
        return served

    yield starter
    for served in started:
        served.process.stop()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=15)


def get(sock: socket.socket, path: str) -> tuple[int, dict[str, str], bytes]:
    sock.sendall(f"GET {path} HTTP/1.1\r\n".encode() + HOST + b"\r\n")
    answer = Reader(sock).answer()
    assert answer is not None, "the connection ended without an answer"
    return answer.status, dict(answer.headers), answer.body


def test_sigterm_closes_idle_connections_and_exits(start: Callable[..., Served]) -> None:
    served = start("--keep-alive", "30")
    idle = connect(served.port)
    assert get(idle, "/")[0] == 200
    started = time.monotonic()
    served.process.process.send_signal(signal.SIGTERM)
    assert served.process.process.wait(15) == 0
    # Kept-alive connections are held for at most two seconds of a stop, not their 30 s keep-alive.
    assert time.monotonic() - started < 5
    assert idle.recv(1) == b""
    idle.close()


def test_sigterm_lets_a_stream_finish_and_answers_late_requests_with_close(start: Callable[..., Served]) -> None:
    served = start("--keep-alive", "30", "--graceful-timeout", "20")
    streaming = connect(served.port)
    streaming.sendall(b"GET /stream?8 HTTP/1.1\r\n" + HOST + b"\r\n")
    first = streaming.recv(65536)
    assert first.startswith(b"HTTP/1.1 200 OK")
    kept = connect(served.port)
    assert get(kept, "/")[0] == 200
    served.process.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # A request on a kept-alive connection while the worker stops is still answered, and told to close.
    status, headers, _ = get(kept, "/late")
    assert (status, headers["connection"]) == (200, "close")
    rest = b""
    while not rest.endswith(b"0\r\n\r\n"):
        chunk = streaming.recv(65536)
        assert chunk, "the stream was cut off"
        rest += chunk
    assert rest.count(b"event ") == 7  # events 1 to 7; event 0 came with the head
    assert served.process.process.wait(15) == 0
    streaming.close()
    kept.close()


def test_the_heartbeat_goes_on_while_a_long_request_runs(start: Callable[..., Served]) -> None:
    """gunicorn kills a worker that misses its heartbeat for ``timeout`` seconds; a 3 s stream must not."""
    served = start("--timeout", "1")
    worker_before = children(served.process.pid)
    with connect(served.port) as sock:
        status, _, body = get(sock, "/stream?15")
    assert status == 200 and body.count(b"event ") == 15
    assert children(served.process.pid) == worker_before


def test_max_requests_restarts_the_worker_without_failing_a_request(start: Callable[..., Served]) -> None:
    served = start("--max-requests", "3")
    workers_seen = set()
    for number in range(10):
        with connect(served.port) as sock:
            assert get(sock, f"/{number}")[0] == 200
        workers_seen |= set(children(served.process.pid))
    assert len(workers_seen) >= 3


def test_connections_beyond_worker_connections_wait_their_turn(start: Callable[..., Served]) -> None:
    served = start("--worker-connections", "1", "--keep-alive", "30")
    first = connect(served.port)
    assert get(first, "/")[0] == 200
    answered = threading.Event()

    def second_client() -> None:
        with connect(served.port) as sock:
            if get(sock, "/")[0] == 200:
                answered.set()

    thread = threading.Thread(target=second_client)
    thread.start()
    assert not answered.wait(1.5)  # the only connection slot is taken by the idle first connection
    first.close()
    assert answered.wait(5)
    thread.join(5)


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(start: Callable[..., Served]) -> None:
    served = start("--keep-alive", "1")
    with connect(served.port) as sock:
        assert get(sock, "/")[0] == 200
        started = time.monotonic()
        assert sock.recv(1) == b""
        assert 0.8 < time.monotonic() - started < 3
