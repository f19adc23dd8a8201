"""Real server processes for end-to-end tests, on free loopback ports, stopped by process id."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support.issuer import MockIssuer
from tests.support.token_scan import find_tokens

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(
    url: str, process: subprocess.Popen[bytes], timeout: float = 30, *, any_status: bool = False
) -> None:
    """Wait for a 200 from ``url`` (any HTTP answer at all with ``any_status``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as error:
            error.close()
            if any_status:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} was not ready within {timeout} s")


class ServerProcess:
    """A server started as a subprocess, its output captured in a log file."""

    def __init__(
        self,
        args: list[str],
        env: Mapping[str, str],
        log_path: Path,
        ready_url: str,
        *,
        any_status: bool = False,
        process_group: bool = False,
    ) -> None:
        """``process_group``: the server runs in a process group of its own, and stop() signals the whole group
        (for a program that starts the server as its child, such as ``make run``)."""
        self.args = args
        self.log_path = log_path
        self.ready_url = ready_url
        self.process_group = process_group
        self._log = open(log_path, "wb")  # closed in stop()
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_")}
        full_env.update(env)
        self.process = subprocess.Popen(
            args, cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=process_group
        )
        try:
            wait_until_ready(ready_url, self.process, any_status=any_status)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"{args[0]} did not start:\n{self.log()}") from None

    @property
    def pid(self) -> int:
        return self.process.pid

    def _signal(self, sig: int) -> None:
        if self.process_group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
        else:
            self.process.send_signal(sig)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Stop the server; fail if its log (access log and app log) ever carried a token."""
        if self.process.poll() is None:
            self._signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait(10)
        if self.process_group:
            # The group is the one this object started (its id is the leader's pid); nothing of it may outlive it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        if not self._log.closed:
            self._log.close()
            leaked = find_tokens(self.log())
            assert not leaked, f"{self.args[0]} logged tokens: {leaked}"
        return self.process.returncode


def start_gunicorn(
    env: Mapping[str, str],
    log_path: Path,
    *,
    port: int | None = None,
    workers: int = 2,
    threads: int = 4,
    app: str = "wsgi:app",
) -> tuple[ServerProcess, str]:
    """gunicorn with the shipped configuration file serving ``app``; returns the process and its base URL."""
    port = port or free_port()
    args = [
        str(BIN / "gunicorn"),
        "-c",
        str(ROOT / "gunicorn.conf.py"),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        app,
    ]
    base = f"http://127.0.0.1:{port}"
    return ServerProcess(args, env, log_path, base + "/readyz"), base


TEST_STATE_SECRET = "test-state-secret-0123456789-abcdefghijklmnopq"


@dataclass
class RunningServer:
    """The production-mode app under gunicorn, trusting a mock issuer."""

    process: ServerProcess
    base: str
    issuer: MockIssuer

    @property
    def url(self) -> str:
        return self.base + "/mcp"

    def token(self, *scopes: str, **claims: object) -> str:
        return self.issuer.mint(str(claims.pop("aud", self.url)), scopes=scopes, **claims)  # type: ignore[arg-type]

    def stop(self) -> None:
        assert self.process.stop() == 0, self.process.log()[-3000:]


def start_app(issuer: MockIssuer, folder: Path, *, workers: int = 2, threads: int = 4, **env: str) -> RunningServer:
    """The app in production mode under the shipped gunicorn.conf.py on a free port, its resource URL matching."""
    port = free_port()
    settings = {
        "MCP_RESOURCE_URL": f"http://127.0.0.1:{port}/mcp",
        "MCP_ISSUER": issuer.issuer,
        "MCP_STATE_SECRET": TEST_STATE_SECRET,
        "MCP_INSTANCE_PATH": str(folder / "instance"),
        **env,
    }
    process, base = start_gunicorn(settings, folder / "gunicorn.log", port=port, workers=workers, threads=threads)
    return RunningServer(process, base, issuer)


UWSGI_LOG_FORMAT = '%(addr) [pid %(pid)] "%(method) %(var.PATH_INFO) %(proto)" %(status) %(size) %(msecs)ms'


def start_uwsgi(
    env: Mapping[str, str],
    log_path: Path,
    *,
    fifo: Path,
    lazy_apps: bool = False,
    port: int | None = None,
    wsgi_file: Path = ROOT / "wsgi.py",
) -> tuple[ServerProcess, str]:
    """uWSGI (the pyuwsgi wheel) as WSGI hosts run it: a master, 2 processes, no --enable-threads.

    ``wsgi_file`` (``wsgi.py``, or the host-style file in docs/) is the WSGI
    file and ``application`` its callable, as on PythonAnywhere. The master loads the app and forks the workers, unless
    ``lazy_apps``. ``--http11-socket`` keeps connections alive like a front
    proxy would; the log format leaves out query strings (uWSGI's default
    request line has them). ``fifo`` is the master FIFO for reloads and a
    graceful shutdown.
    """
    port = port or free_port()
    args = [
        str(BIN / "uwsgi"),
        "--master",
        "--processes",
        "2",
        "--http11-socket",
        f"127.0.0.1:{port}",
        "--wsgi-file",
        str(wsgi_file),
        "--callable",
        "application",
        "--need-app",
        "--die-on-term",
        "--master-fifo",
        str(fifo),
        "--log-format",
        UWSGI_LOG_FORMAT,
        *(["--lazy-apps"] if lazy_apps else []),
    ]
    base = f"http://127.0.0.1:{port}"
    return ServerProcess(args, env, log_path, base + "/readyz"), base
