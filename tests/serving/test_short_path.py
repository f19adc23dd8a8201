"""Which requests the connection worker serves itself and which it hands to gunicorn's parser, in-process.

``test_http11`` shows both paths answer as gunicorn does; this shows the short
path is taken where it should be, so that comparison is not vacuous.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from app.serving.http11 import ClientConnection
from app.serving.http11 import short_path_available
from app.serving.worker import ConnectionWorker
from tests.serving import echo_app
from tests.serving.test_http11 import CASES


class _App:
    def wsgi(self) -> object:
        return echo_app.app


@pytest.fixture
def worker() -> Iterator[ConnectionWorker]:
    cfg = Config()
    worker = ConnectionWorker(0, os.getpid(), [], _App(), 30, cfg, Logger(cfg))
    worker.wsgi = echo_app.app
    worker.short_path = short_path_available(cfg)
    yield worker
    worker.tmp.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, client = socket.socketpair()
    client.settimeout(5)
    yield server, client
    server.close()
    client.close()


def take(worker: ConnectionWorker, pair: tuple[socket.socket, socket.socket], data: bytes) -> bool | None:
    """Offer one request to the short path: True/False once served (keep-alive or not), None if declined."""
    server, client = pair
    sender = threading.Thread(target=client.sendall, args=(data,))  # a large body fills the socket buffer
    sender.start()
    connection = ClientConnection(worker, server, ("127.0.0.1", 40000), ("127.0.0.1", 8000))
    connection._prepare_socket()
    assert connection._receive()
    taken = connection._serve_short_path(blocking=True)
    if taken is None:
        # Declined: everything read so far is still there, from the first byte, for gunicorn's parser.
        assert connection.buffer and data.startswith(connection.buffer)
        received = len(connection.buffer)
        while received < len(data):  # let the sender finish
            received += len(server.recv(65536))
    sender.join(5)
    return taken


def test_the_short_path_is_available_here(worker: ConnectionWorker) -> None:
    assert worker.short_path


SHORT = [
    "get with a query",
    "post json",
    "percent-encoded path",
    "repeated header",
    "http/1.0",
    "http/1.0 keep-alive",
    "connection close",
    "forwarded https from a trusted peer",
    "head",
    "no content",
    "a streamed answer",
]
GUNICORN = [
    "underscore in a header name",
    "conflicting scheme headers",
    "expect 100-continue",
    "chunked body",
    "chunked and a length",
    "two lengths",
    "a length that is not a number",
    "a signed length",
    "two hosts",
    "a space in a header name",
    "obsolete line folding",
    "bare line feeds",
    "a leading empty line",
    "a lower-case method",
    "a request line too long",
    "a header too large",
    "an absolute-form target",
    "a path starting with two slashes",
    "a fragment",
    "a non-ascii target",
    "a body larger than the short path takes",
]


@pytest.mark.parametrize("name", SHORT)
def test_plain_requests_take_the_short_path(
    worker: ConnectionWorker, pair: tuple[socket.socket, socket.socket], name: str
) -> None:
    assert take(worker, pair, CASES[name]) is not None


@pytest.mark.parametrize("name", GUNICORN)
def test_everything_else_goes_to_gunicorn_untouched(
    worker: ConnectionWorker, pair: tuple[socket.socket, socket.socket], name: str
) -> None:
    assert take(worker, pair, CASES[name]) is None


def test_the_answer_leaves_in_one_write(worker: ConnectionWorker, pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    assert take(worker, pair, CASES["post json"]) is True
    first = client.recv(65536)
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    head, _, body = first.partition(b"\r\n\r\n")
    assert b"Content-Length: %d" % len(body) in head
