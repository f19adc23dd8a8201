"""The connection worker's HTTP/1.1 handling, compared byte for byte with gunicorn's own gthread worker.

Both serve the same WSGI app (``tests/serving/echo_app.py``, which answers with the
environ it was given) under the same settings; each raw request below goes to
both, and the answers must be identical apart from the Date header and the port
each server listens on. Plain requests take the worker's short path, the others
gunicorn's full parser: the comparison shows the short path builds exactly the
environ and answer gunicorn would, and that everything else is gunicorn's.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.raw_http import Answer
from tests.support.raw_http import exchange
from tests.support.servers import BIN
from tests.support.servers import ServerProcess
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e

WORKER = "app.serving.worker.ConnectionWorker"


@dataclass
class Served:
    process: ServerProcess
    port: int


def serve(worker: str, folder: Path, *options: str) -> Served:
    port = free_port()
    args = [
        str(BIN / "gunicorn"),
        "-c",
        "python:bench.gunicorn_plain",
        "-k",
        worker,
        "--workers",
        "1",
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        *options,
        "tests.serving.echo_app:app",
    ]
    process = ServerProcess(args, {}, folder / f"{worker.rsplit('.', 1)[-1]}-{port}.log", f"http://127.0.0.1:{port}/")
    return Served(process, port)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    folder = tmp_path_factory.mktemp("http11")
    started = {"ours": serve(WORKER, folder), "gunicorn": serve("gthread", folder, "--threads", "4")}
    yield started
    for served in started.values():
        served.process.stop()


def normalized(answers: list[Answer] | str, port: int) -> object:
    if isinstance(answers, str):
        return answers
    shown = []
    for answer in answers:
        answer.headers = [(k, v) for k, v in answer.headers if k != "date"]
        body: object = answer.body
        if ("content-type", "application/json") in answer.headers and answer.body:
            body = json.loads(answer.body)
            assert isinstance(body, dict)
            if body.get("SERVER_PORT") == str(port):
                body["SERVER_PORT"] = "<port>"
            headers = [(k, v) for k, v in answer.headers if k != "content-length"]
        else:
            headers = answer.headers
        shown.append((answer.status, answer.informational, headers, body))
    return shown


def both(servers: dict[str, Served], data: bytes, **options: object) -> tuple[object, object]:
    ours = normalized(exchange(servers["ours"].port, data, **options), servers["ours"].port)  # type: ignore[arg-type]
    theirs = normalized(exchange(servers["gunicorn"].port, data, **options), servers["gunicorn"].port)  # type: ignore[arg-type]
    return ours, theirs


HOST = b"Host: example.test\r\n"
BIG = 300 * 1024

CASES = {
    "get with a query": b"GET /path/x?q=1&r=%20 HTTP/1.1\r\n" + HOST + b"\r\n",
    "post json": b"POST /mcp HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    "percent-encoded path": b"GET /a%2Fb/%C3%A9 HTTP/1.1\r\n" + HOST + b"\r\n",
    "repeated header": b"GET / HTTP/1.1\r\n" + HOST + b"X-Multi: a\r\nX-Multi: b\r\nX-Other: c\r\n\r\n",
    "underscore in a header name": b"GET / HTTP/1.1\r\n" + HOST + b"X_Forwarded_For: 6.6.6.6\r\n\r\n",
    "http/1.0": b"GET / HTTP/1.0\r\n\r\n",
    "http/1.0 keep-alive": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "connection close": b"GET / HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n",
    "forwarded https from a trusted peer": b"GET / HTTP/1.1\r\n" + HOST + b"X-Forwarded-Proto: https\r\n\r\n",
    "conflicting scheme headers": b"GET / HTTP/1.1\r\n"
    + HOST
    + b"X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n\r\n",
    "expect 100-continue": b"POST / HTTP/1.1\r\n" + HOST + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    "unknown expectation": b"POST / HTTP/1.1\r\n" + HOST + b"Expect: magic\r\nContent-Length: 3\r\n\r\nabc",
    "chunked body": b"POST / HTTP/1.1\r\n"
    + HOST
    + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    "chunked and a length": b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    "unknown transfer coding": b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: magic\r\n\r\n",
    "two lengths": b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\na",
    "a length that is not a number": b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 1a\r\n\r\na",
    "a signed length": b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: +1\r\n\r\na",
    "two hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "two content types": b"GET / HTTP/1.1\r\n" + HOST + b"Content-Type: a/b\r\nContent-Type: c/d\r\n\r\n",
    "a space in a header name": b"GET / HTTP/1.1\r\n" + HOST + b"Bad Name: x\r\n\r\n",
    "a control character in a value": b"GET / HTTP/1.1\r\n" + HOST + b"X-A: a\x01b\r\n\r\n",
    "obsolete line folding": b"GET / HTTP/1.1\r\n" + HOST + b"X-A: a\r\n folded\r\n\r\n",
    "bare line feeds": b"GET / HTTP/1.1\n" + HOST + b"\n",
    "a leading empty line": b"\r\nGET / HTTP/1.1\r\n" + HOST + b"\r\n",
    "a lower-case method": b"get / HTTP/1.1\r\n" + HOST + b"\r\n",
    "http/2.0 on the request line": b"GET / HTTP/2.0\r\n" + HOST + b"\r\n",
    "a request line too long": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
    "a header too large": b"GET / HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n",
    "too many headers": b"GET / HTTP/1.1\r\n" + HOST + b"".join(b"X-%d: v\r\n" % i for i in range(120)) + b"\r\n",
    "an absolute-form target": b"GET http://example.test/x?y=1 HTTP/1.1\r\n" + HOST + b"\r\n",
    "a path starting with two slashes": b"GET //a/b?c HTTP/1.1\r\n" + HOST + b"\r\n",
    "a fragment": b"GET /a#frag HTTP/1.1\r\n" + HOST + b"\r\n",
    "a non-ascii target": b"GET /\xe9 HTTP/1.1\r\n" + HOST + b"\r\n",
    "head": b"HEAD / HTTP/1.1\r\n" + HOST + b"\r\n",
    "no content": b"GET /no-content HTTP/1.1\r\n" + HOST + b"\r\n",
    "a body larger than the short path takes": b"POST / HTTP/1.1\r\n"
    + HOST
    + b"Content-Length: %d\r\n\r\n" % BIG
    + b"x" * BIG,
    "the app fails before answering": b"GET /fail-early HTTP/1.1\r\n" + HOST + b"\r\n",
    "the app sends a header with a line break": b"GET /bad-header HTTP/1.1\r\n" + HOST + b"\r\n",
    "a streamed answer": b"GET /stream?2 HTTP/1.1\r\n" + HOST + b"\r\n",
    "a streamed answer to http/1.0": b"GET /stream?2 HTTP/1.0\r\n\r\n",
}


@pytest.mark.parametrize("name", CASES)
def test_the_same_answer_as_gunicorn(servers: dict[str, Served], name: str) -> None:
    ours, theirs = both(servers, CASES[name])
    assert ours == theirs


def test_what_the_short_path_builds(servers: dict[str, Served]) -> None:
    """Not only equal to gunicorn's: right."""
    request = (
        b"POST /a%20b?x=1 HTTP/1.1\r\nHost: example.test:8080\r\nContent-Type: application/json\r\n"
        b'X-Multi: a\r\nX-Multi: b\r\nX-Forwarded-Proto: https\r\nContent-Length: 7\r\n\r\n{"a":1}'
    )
    [answer] = exchange(servers["ours"].port, request)  # type: ignore[misc]
    assert answer.status == 200
    seen = json.loads(answer.body)
    assert {key: seen[key] for key in ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "RAW_URI")} == {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/a b",
        "QUERY_STRING": "x=1",
        "RAW_URI": "/a%20b?x=1",
    }
    assert seen["HTTP_X_MULTI"] == "a,b"
    assert seen["HTTP_HOST"] == "example.test:8080"
    assert seen["CONTENT_TYPE"] == "application/json"
    assert seen["CONTENT_LENGTH"] == "7"
    assert "HTTP_CONTENT_TYPE" not in seen and "HTTP_CONTENT_LENGTH" not in seen
    assert seen["wsgi.url_scheme"] == "https"
    assert seen["body"] == '{"a":1}'
    assert seen["has_socket"] is True
    assert ("connection", "keep-alive") in answer.headers


def test_pipelined_requests_are_answered_in_order(servers: dict[str, Served]) -> None:
    requests = b"".join(
        b"POST /p%d HTTP/1.1\r\n" % n + HOST + b"Content-Length: 1\r\n\r\n" + str(n).encode() for n in range(3)
    )
    ours, theirs = both(servers, requests + CASES["chunked body"], answers=4)
    assert ours == theirs
    assert isinstance(ours, list) and len(ours) == 4
    assert [json.loads(json.dumps(entry[3]))["PATH_INFO"] for entry in ours] == ["/p0", "/p1", "/p2", "/"]


def test_a_body_the_app_does_not_read_does_not_leak_into_the_next_request(servers: dict[str, Served]) -> None:
    requests = b"POST /unread HTTP/1.1\r\n" + HOST + b"Content-Length: 10\r\n\r\n0123456789" + CASES["get with a query"]
    ours, theirs = both(servers, requests, answers=2)
    assert ours == theirs
    assert isinstance(ours, list) and [entry[0] for entry in ours] == [200, 200]


def test_keep_alive_serves_requests_one_after_another(servers: dict[str, Served]) -> None:
    with socket.create_connection(("127.0.0.1", servers["ours"].port), timeout=10) as sock:
        for number in range(5):
            sock.sendall(b"GET /n%d HTTP/1.1\r\n" % number + HOST + b"\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(65536)
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            body = head.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += sock.recv(65536)
            assert json.loads(body)["PATH_INFO"] == f"/n{number}"


def test_a_head_and_its_body_split_across_packets(servers: dict[str, Served]) -> None:
    with socket.create_connection(("127.0.0.1", servers["ours"].port), timeout=10) as sock:
        for piece in (b"POST /split HTTP/1.1\r\nHo", b"st: example.test\r\nContent-Le", b"ngth: 4\r\n\r\nab", b"cd"):
            sock.sendall(piece)
            time.sleep(0.05)
        answer = b""
        while not answer.endswith(b"}"):
            answer += sock.recv(65536)
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["body"] == "abcd"


def test_a_stream_arrives_piece_by_piece(servers: dict[str, Served]) -> None:
    with socket.create_connection(("127.0.0.1", servers["ours"].port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /stream?3 HTTP/1.1\r\n" + HOST + b"\r\n")
        first = sock.recv(65536)
        first_at = time.monotonic() - started
        rest = b""
        while not rest.endswith(b"0\r\n\r\n"):
            rest += sock.recv(65536)
        total = time.monotonic() - started
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Transfer-Encoding: chunked" in first
    # The head and the first event leave together; the later events only as the app yields them.
    assert first.endswith(b"8\r\nevent 0\n\r\n")
    assert first_at < 0.15
    assert rest == b"8\r\nevent 1\n\r\n8\r\nevent 2\n\r\n0\r\n\r\n"
    assert total > 0.35


def test_a_stream_that_starts_empty_sends_its_head_at_once(servers: dict[str, Served]) -> None:
    with socket.create_connection(("127.0.0.1", servers["ours"].port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /empty-first HTTP/1.1\r\n" + HOST + b"\r\n")
        head = sock.recv(65536)
        elapsed = time.monotonic() - started
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert elapsed < 0.5


def test_an_app_failing_in_the_middle_ends_the_connection(servers: dict[str, Served]) -> None:
    ours, theirs = both(servers, b"GET /fail-late HTTP/1.1\r\n" + HOST + b"\r\n")
    assert ours == theirs == "closed"


def test_the_date_header_is_the_current_time(servers: dict[str, Served]) -> None:
    """The worker formats it once a second instead of for every answer; it stays right."""
    from email.utils import parsedate_to_datetime

    for _ in range(3):
        [answer] = exchange(servers["ours"].port, CASES["get with a query"])  # type: ignore[misc]
        sent = parsedate_to_datetime(answer.header("date") or "")
        assert abs(time.time() - sent.timestamp()) < 2
        time.sleep(0.6)
