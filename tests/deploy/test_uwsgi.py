"""uWSGI as PythonAnywhere-style hosts run it: a WSGI file, 2 processes, no --enable-threads.

The WSGI file is wsgi.py itself, or the host-style file the README tells
PythonAnywhere users to paste (docs/pythonanywhere_wsgi.py), which loads the
settings from a .env file.

The bridge starts no thread of its own: each request drives its event loop
from the request's own thread, and loops are made lazily in the process that
uses them. So it serves whether uWSGI loads the app in the master and forks
(the default) or loads it in each worker (``--lazy-apps``). uWSGI has no
``worker_exit`` hook: a worker that used a sync tool holds anyio threads,
which the loop pool stops from an interpreter-exit hook, so reloads and a
graceful shutdown still end every process (without that hook a worker never
exits and uWSGI kills it after its 60 s mercy).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from tests.deploy.conftest import app_env
from tests.deploy.conftest import assert_no_token
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import call_tool
from tests.support.mcp_client import connect
from tests.support.mcp_client import json_of
from tests.support.mcp_client import text_of
from tests.support.servers import ROOT
from tests.support.servers import ServerProcess
from tests.support.servers import free_port
from tests.support.servers import start_uwsgi

pytestmark = pytest.mark.e2e
ERAS = pytest.mark.parametrize("era", ["2026-07-28", "2025-11-25"])
ALL_TOOLS = ["whoami", "greet_user", "list_todos", "add_todo", "delete_todo", "count_to"]
SCOPES = ("todo:read", "todo:write", "todo:delete")


@dataclass
class UWSGI:
    process: ServerProcess
    base: str
    fifo: Path
    issuer: MockIssuer
    lazy_apps: bool
    json_response: bool

    @property
    def url(self) -> str:
        return self.base + "/mcp"

    def token(self, *scopes: str, **claims: object) -> str:
        return self.issuer.mint(self.url, scopes=scopes, **claims)  # type: ignore[arg-type]

    def command(self, letter: str) -> None:
        """A master FIFO command: w reloads the workers, c chain-reloads (lazy apps), q shuts down gracefully."""
        with open(self.fifo, "w") as fifo:
            fifo.write(letter)

    def worker_pids(self) -> list[str]:
        log = self.process.log()
        spawned = re.findall(r"(?:spawned uWSGI worker \d+ \(pid: |Respawned uWSGI worker \d+ \(new pid: )(\d+)", log)
        gone = set(re.findall(r"worker \d+ killed successfully \(pid: (\d+)\)", log))
        return [pid for pid in spawned if pid not in gone]


HOST_WSGI_FILE = ROOT / "docs" / "pythonanywhere_wsgi.py"


def host_wsgi_file(folder: Path, settings: dict[str, str]) -> Path:
    """The shipped host WSGI file, pointed at this checkout, with the settings in a .env file of its own."""
    text = HOST_WSGI_FILE.read_text()
    for old, new in [
        ('PROJECT = "/home/yourname/mcp-server"', f"PROJECT = {str(ROOT)!r}"),
        ('load_dotenv(os.path.join(PROJECT, ".env"))', f"load_dotenv({str(folder / 'settings.env')!r})"),
    ]:
        assert old in text, f"{old!r} is no longer in {HOST_WSGI_FILE}"
        text = text.replace(old, new)
    (folder / "settings.env").write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    path = folder / "host_wsgi.py"
    path.write_text(text)
    return path


@pytest.fixture(
    scope="module",
    params=[
        pytest.param((False, False, False), id="forked-sse"),
        pytest.param((False, True, True), id="host-wsgi-file-json"),
        pytest.param((True, False, False), id="lazy-apps-sse"),
    ],
)
def uwsgi(
    request: pytest.FixtureRequest, issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UWSGI]:
    lazy_apps, json_response, host_file = request.param
    folder = tmp_path_factory.mktemp("uwsgi")
    port = free_port()
    settings = app_env(issuer, f"http://127.0.0.1:{port}/mcp", folder, MCP_JSON_RESPONSE="1" if json_response else "0")
    fifo = folder / "master.fifo"
    if host_file:
        # As on PythonAnywhere: the settings come from a .env file the WSGI file loads, not the environment.
        wsgi_file = host_wsgi_file(folder, settings)
        process, base = start_uwsgi({}, folder / "uwsgi.log", fifo=fifo, port=port, wsgi_file=wsgi_file)
    else:
        process, base = start_uwsgi(settings, folder / "uwsgi.log", fifo=fifo, lazy_apps=lazy_apps, port=port)
    server = UWSGI(process, base, fifo, issuer, lazy_apps, json_response)
    yield server
    process.stop()  # a no-op after test_graceful_shutdown_ends_every_process


@ERAS
@pytest.mark.anyio
async def test_sdk_client_lists_and_calls_every_example_tool(uwsgi: UWSGI, era: str) -> None:
    token = uwsgi.token(*SCOPES, sub=f"uwsgi-{era}-{uwsgi.lazy_apps}-{uwsgi.json_response}")
    async with connect(uwsgi.url, token, era=era) as session:
        tools = await session.list_tools()
        whoami = json_of(await session.call_tool("whoami", {}))
        greeting = text_of(await session.call_tool("greet_user", {"name": "Ada"}))
        added = await session.call_tool("add_todo", {"title": "water the plants"})
        listed = await session.call_tool("list_todos", {})
        deleted = await session.call_tool("delete_todo", {"id": added.structured_content["id"]})
        arrivals: list[float] = []
        start = time.monotonic()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            arrivals.append(time.monotonic() - start)

        counted = await session.call_tool("count_to", {"n": 3}, progress_callback=on_progress)
    assert [tool.name for tool in tools.tools] == ALL_TOOLS
    assert whoami["scopes"] == list(SCOPES)
    assert greeting == "Hello, Ada!"
    assert [todo["title"] for todo in listed.structured_content["todos"]] == ["water the plants"]
    assert deleted.structured_content == {"deleted": added.structured_content["id"]}
    assert text_of(counted) == "Counted to 3."
    if uwsgi.json_response:
        # Plain JSON answers carry no notifications: the SDK drops progress in this mode.
        assert arrivals == []
    else:
        # Streamed live, one event at a time, through uWSGI without --enable-threads.
        assert len(arrivals) == 3
        assert arrivals[0] < 0.6, arrivals
        assert all(later - earlier > 0.1 for earlier, later in zip(arrivals, arrivals[1:], strict=False)), arrivals


def test_answers_are_plain_json_or_events_as_configured(uwsgi: UWSGI) -> None:
    headers, body = call_tool("count_to", {"n": 2}, token=uwsgi.token())
    body = body.replace(b'"_meta": {', b'"_meta": {"progressToken": "p", ', 1)
    response = httpx2.post(uwsgi.url, headers=headers, content=body, timeout=30)
    assert response.status_code == 200
    if uwsgi.json_response:
        assert response.headers["content-type"] == "application/json"
        assert response.json()["result"]["content"][0]["text"] == "Counted to 2."
    else:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.text.count("notifications/progress") == 2


def test_both_processes_serve(uwsgi: UWSGI) -> None:
    token = uwsgi.token()
    for _ in range(12):
        headers, body = call_tool("greet_user", {"name": "x"}, token=token)
        # A new connection each time: the kernel hands connections to whichever worker accepts first.
        assert httpx2.post(uwsgi.url, headers=headers, content=body, timeout=30).status_code == 200
    pids = set(re.findall(r'\[pid (\d+)\] "POST /mcp ', uwsgi.process.log()))
    assert len(pids) == 2, uwsgi.process.log()[-2000:]


@pytest.mark.anyio
async def test_reloaded_workers_serve_and_the_old_ones_exit(uwsgi: UWSGI) -> None:
    before = uwsgi.worker_pids()
    assert len(before) == 2
    uwsgi.command("c" if uwsgi.lazy_apps else "w")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = uwsgi.worker_pids()
        log = uwsgi.process.log()
        replaced = len(now) == 2 and not set(now) & set(before)
        if replaced and (not uwsgi.lazy_apps or "chain reloading complete" in log):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"workers were not replaced within 30 s:\n{uwsgi.process.log()[-3000:]}")
    async with connect(uwsgi.url, uwsgi.token(*SCOPES)) as session:
        assert text_of(await session.call_tool("greet_user", {"name": "again"})) == "Hello, again!"
    # Reloaded workers exited by themselves; none was killed after uWSGI's mercy ran out.
    assert "NO MERCY" not in uwsgi.process.log()


def test_graceful_shutdown_ends_every_process(uwsgi: UWSGI) -> None:
    started = time.monotonic()
    uwsgi.command("q")
    code = uwsgi.process.process.wait(30)
    took = time.monotonic() - started
    log = uwsgi.process.log()
    print(f"uWSGI graceful shutdown ({'lazy-apps' if uwsgi.lazy_apps else 'forked'}): exit {code} in {took:.2f} s")
    assert code == 0, log[-3000:]
    assert "goodbye to uWSGI." in log
    assert "Traceback" not in log
    assert_no_token(log)
