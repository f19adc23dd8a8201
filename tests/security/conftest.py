"""A real gunicorn for the hostile-input tests (rate limits off, so every input reaches the code under test),
and Debian's redis-server for the tests of state shared between instances."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.support.issuer import MockIssuer
from tests.support.servers import RunningServer
from tests.support.servers import free_port
from tests.support.servers import start_app


@pytest.fixture(scope="module")
def hardened_server(issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_app(issuer, tmp_path_factory.mktemp("hostile"), MCP_RATE_LIMIT="off")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's redis-server (installed by make test) on a loopback port, no persistence, stopped by pid."""
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is missing: make test installs the Debian package"
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)
