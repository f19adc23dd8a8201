"""The access logger computes only the atoms its format names, and writes what gunicorn's would."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.glogging import SafeAtoms

from app.serving.access_log import AccessLogger

SHIPPED = '%(h)s %(p)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'
EVERY_ATOM = (
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(m)s %(U)s %(q)s %(H)s %(b)s %(B)s %(f)s "%(a)s" %(T)s %(D)s %(M)s %(L)s '
    "%(p)s %({x-request-id}i)s %({X-Missing}i)s %({content-type}o)s %({REMOTE_PORT}e)s %(unknown)s"
)


class Response:
    status = "200 OK"
    sent = 123
    headers = [("Content-Type", "application/json"), ("X-Request-Id", "out")]


class Request:
    headers = [("HOST", "example.test"), ("X-REQUEST-ID", "abc"), ("AUTHORIZATION", "Basic " + "x")]


ENVIRON: dict[str, Any] = {
    "REMOTE_ADDR": "127.0.0.1",
    "REMOTE_PORT": "5555",
    "REQUEST_METHOD": "POST",
    "RAW_URI": "/mcp?secret=1",
    "PATH_INFO": "/mcp",
    "QUERY_STRING": "secret=1",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_USER_AGENT": 'agent "quoted"',
    "HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"alice:pw").decode(),
}


def line(logger_class: type[Logger], access_format: str, monkeypatch: pytest.MonkeyPatch) -> str:
    cfg = Config()
    cfg.set("access_log_format", access_format)
    logger = logger_class(cfg)
    monkeypatch.setattr(logger, "now", lambda: "[02/Dec/2026:01:02:03 +0000]")
    atoms = logger.atoms(Response(), Request(), ENVIRON, timedelta(seconds=1, microseconds=2345))
    return access_format % SafeAtoms(atoms)


@pytest.mark.parametrize("access_format", [SHIPPED, EVERY_ATOM])
def test_the_same_line_as_gunicorn(access_format: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert line(AccessLogger, access_format, monkeypatch) == line(Logger, access_format, monkeypatch)


def test_only_the_named_atoms_are_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = Config()
    cfg.set("access_log_format", SHIPPED)
    logger = AccessLogger(cfg)
    atoms = logger.atoms(Response(), Request(), ENVIRON, timedelta(microseconds=5000))
    assert sorted(atoms) == ["B", "H", "M", "U", "a", "h", "m", "p", "s"]


@pytest.mark.parametrize(
    "access_format",
    [SHIPPED, EVERY_ATOM, '%(h)s "%(r)s" 100%% done %(s)s', "{%(h)s} {} %(s)s", "%(h)-15s %(s)s %(B)d"],
    ids=["shipped", "every atom", "a literal percent", "literal braces", "other conversions (gunicorn formats them)"],
)
def test_the_same_lines_in_the_file_as_gunicorn(
    access_format: str, tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = {}
    for logger_class in (Logger, AccessLogger):
        cfg = Config()
        path = tmp_path / f"{logger_class.__name__}.log"  # type: ignore[operator]
        cfg.set("accesslog", str(path))
        cfg.set("access_log_format", access_format)
        logger = logger_class(cfg)
        monkeypatch.setattr(logger, "now", lambda: "[02/Dec/2026:01:02:03 +0000]")
        for _ in range(2):
            logger.access(Response(), Request(), ENVIRON, timedelta(seconds=1, microseconds=2345))
        for handler in list(logger.access_log.handlers) + list(logger.error_log.handlers):
            handler.close()
        written[logger_class.__name__] = path.read_text()
    assert written["AccessLogger"] == written["Logger"]
    assert written["Logger"].count("\n") == 2


def test_a_forked_worker_names_its_own_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pid is asked once per process: a worker forked after the logger was set up still shows its own."""
    import os

    cfg = Config()
    cfg.set("access_log_format", "%(p)s")
    logger = AccessLogger(cfg)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child reports through the pipe)
        try:
            atom = logger.atoms(Response(), Request(), ENVIRON, timedelta())["p"]
            os.write(write, f"{atom} <{os.getpid()}>".encode())
        finally:
            os._exit(0)
    os.close(write)
    reported = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(child, 0)
    seen, own = reported.split(" ")
    assert seen == own != f"<{os.getpid()}>"
    assert logger.atoms(Response(), Request(), ENVIRON, timedelta())["p"] == f"<{os.getpid()}>"
