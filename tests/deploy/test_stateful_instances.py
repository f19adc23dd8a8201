"""Stateful instances side by side: nginx/mcp-server-stateful.conf (TLS) in front of two one-worker gunicorn
instances, each session routed to the instance holding it by the name in its id, with real clients.

Each instance is named after its port, as systemd/mcp-server@.service names them. A third name in the map has
no instance running: the sessions of an instance that is down.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from sse_starlette.sse import EventSourceResponse

from tests.deploy.conftest import app_env
from tests.deploy.conftest import assert_no_token
from tests.deploy.conftest import lines_with
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import HANDSHAKE
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers
from tests.support.mcp_client import connect
from tests.support.mcp_client import connect_sse
from tests.support.mcp_client import json_of
from tests.support.mcp_client import text_of
from tests.support.nginx import SITE_FILE
from tests.support.nginx import STATEFUL_SITE_FILE
from tests.support.nginx import Nginx
from tests.support.nginx import start_nginx
from tests.support.servers import ServerProcess
from tests.support.servers import free_port
from tests.support.servers import start_gunicorn
from tests.support.sse import EventStream
from tests.support.tls import TLSFiles
from tests.support.ts_client import run_sse_client

pytestmark = [pytest.mark.e2e]

TOOLS = "flask_mcp_examples:register,tests.support.stateful_tools:register"
HSTS = "max-age=63072000; includeSubDomains"
SESSION_NOT_FOUND = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Session not found"}}
INITIALIZE = request_body(
    "initialize",
    {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "routed", "version": "1"}},
    era=HANDSHAKE,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class StatefulInstances:
    nginx: Nginx
    instances: dict[str, ServerProcess]  # by MCP_INSTANCE_NAME (the port)
    down: str  # a name in nginx's map whose instance is not running
    issuer: MockIssuer
    tls: TLSFiles

    @property
    def origin(self) -> str:
        return self.nginx.origin

    @property
    def url(self) -> str:
        return self.origin + "/mcp"

    def token(self, *scopes: str, **claims: object) -> str:
        return self.issuer.mint(self.url, scopes=scopes or ("todo:read", "todo:write"), **claims)  # type: ignore[arg-type]

    def client(self) -> httpx2.Client:
        return httpx2.Client(verify=self.tls.client_context(), timeout=30)

    def audited_subjects(self, name: str) -> Counter[str]:
        """Whose requests an instance served: the sub of each of its audit lines."""
        lines = [json.loads(line) for line in self.instances[name].log().splitlines() if line.startswith('{"time"')]
        return Counter(line["sub"] for line in lines if line["sub"])


@pytest.fixture(scope="module")
def stateful(
    issuer: MockIssuer, tls_files: TLSFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StatefulInstances]:
    folder = tmp_path_factory.mktemp("stateful-instances")
    https_port = free_port()
    resource_url = f"https://127.0.0.1:{https_port}/mcp"
    ports = [free_port() for _ in range(3)]
    running, down = ports[:2], str(ports[2])
    instances: dict[str, ServerProcess] = {}
    nginx: Nginx | None = None
    try:
        for port in running:
            env = app_env(
                issuer,
                resource_url,
                folder,
                MCP_TRUSTED_PROXIES="1",
                MCP_STATEFUL="1",
                MCP_LEGACY_SSE="1",
                MCP_INSTANCE_NAME=str(port),
                MCP_TOOLS=TOOLS,
            )
            process, _ = start_gunicorn(env, folder / f"gunicorn-{port}.log", port=port, workers=1)
            instances[str(port)] = process
        nginx = start_nginx(
            folder / "nginx",
            tls_files,
            running,
            https_port=https_port,
            instances=[(str(port), port) for port in ports],
        )
        yield StatefulInstances(nginx, instances, down, issuer, tls_files)
    finally:
        if nginx is not None:
            nginx.stop()
        # SIGINT, gunicorn's quick stop: sessions nobody ended keep their streams open otherwise.
        codes = [instance.stop(signal_number) for instance in instances.values() for signal_number in [2]]
    assert codes == [0] * len(instances), "".join(instance.log()[-3000:] for instance in instances.values())


def instance_of(session_id: str) -> str:
    name, dot, rest = session_id.partition(".")
    assert dot and re.fullmatch(r"[0-9a-f]{32}", rest), session_id
    return name


@pytest.mark.anyio
async def test_two_clients_on_two_instances_each_reach_their_own(stateful: StatefulInstances) -> None:
    """Sessions opened one after the other land on both instances (round robin); then both clients work at once."""
    sessions: dict[str, set[str]] = {}

    def recorder(sub: str) -> Any:
        async def record(response: httpx2.Response) -> None:
            if "mcp-session-id" in response.headers:
                sessions.setdefault(sub, set()).add(response.headers["mcp-session-id"])

        return record

    results: dict[str, list[Any]] = {}

    async def work(sub: str, client: Any) -> None:
        progress: list[float] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(value)

        counted = text_of(await client.call_tool("count_to", {"n": 3}, progress_callback=on_progress))
        for number in range(3):
            await client.call_tool("add_todo", {"title": f"{sub} {number}"})
        listed = json_of(await client.call_tool("list_todos", {}))
        results[sub] = [counted, progress, [todo["title"] for todo in listed["todos"]]]

    verify = stateful.tls.client_context()
    async with (
        connect(
            stateful.url,
            stateful.token(sub="routed-a"),
            era=HANDSHAKE,
            verify=verify,
            event_hooks={"response": [recorder("routed-a")]},
        ) as first,
        connect(
            stateful.url,
            stateful.token(sub="routed-b"),
            era=HANDSHAKE,
            verify=verify,
            event_hooks={"response": [recorder("routed-b")]},
        ) as second,
        anyio.create_task_group() as group,
    ):
        group.start_soon(work, "routed-a", first)
        group.start_soon(work, "routed-b", second)

    [session_a], [session_b] = sessions["routed-a"], sessions["routed-b"]
    homes = {"routed-a": instance_of(session_a), "routed-b": instance_of(session_b)}
    assert set(homes.values()) == set(stateful.instances), homes
    for sub, (counted, progress, titles) in results.items():
        assert (counted, progress) == ("Counted to 3.", [1, 2, 3])
        assert titles == [f"{sub} {number}" for number in range(3)]
    # Every request of a session, and nothing of the other's, reached its instance.
    for sub, home in homes.items():
        other = next(name for name in stateful.instances if name != home)
        assert stateful.audited_subjects(home)[sub] >= 8  # initialize, initialized, list, 5 calls, delete
        assert stateful.audited_subjects(other)[sub] == 0


@pytest.mark.anyio
async def test_an_sse_only_client_through_nginx_with_tls(stateful: StatefulInstances) -> None:
    arrivals: list[float] = []
    async with connect_sse(
        stateful.origin + "/mcp/sse",
        stateful.token("todo:read", sub="sse-through-nginx"),
        verify=stateful.tls.client_context(),
    ) as client:
        started = time.monotonic()

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            arrivals.append(time.monotonic() - started)

        counted = text_of(await client.call_tool("count_to", {"n": 4}, progress_callback=on_progress))
        whoami = json_of(await client.call_tool("whoami", {}))
    assert (counted, whoami["sub"]) == ("Counted to 4.", "sse-through-nginx")
    assert len(arrivals) == 4 and arrivals[0] < 0.6, arrivals
    assert all(later - earlier > 0.1 for earlier, later in zip(arrivals, arrivals[1:], strict=False)), arrivals
    # The stream and every message POST (initialize, initialized, two calls) reached one instance, the one
    # named in the session id. The stream's own audit line comes once the instance has seen it close.
    deadline = time.monotonic() + 5
    while True:
        served = {name: stateful.audited_subjects(name)["sse-through-nginx"] for name in stateful.instances}
        if sorted(served.values()) == [0, 5] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sorted(served.values()) == [0, 5], served


def test_the_typescript_sse_client_through_nginx_with_tls(stateful: StatefulInstances) -> None:
    seen = run_sse_client(stateful.origin + "/mcp/sse", stateful.token("todo:read", sub="ts-nginx"), ca=stateful.tls.ca)
    assert seen["counted"] == ["Counted to 3."]
    assert [p["progress"] for p in seen["progress"]][:2] == [1, 2]
    assert seen["progress"][0]["at"] < 500, seen
    assert seen["whoami"]["sub"] == "ts-nginx"
    served = {name: stateful.audited_subjects(name)["ts-nginx"] for name in stateful.instances}
    assert 0 in served.values() and max(served.values()) >= 5, served


def test_a_resuming_client_through_nginx_gets_what_it_missed(stateful: StatefulInstances) -> None:
    token = stateful.token("todo:read", sub="resumes-through-nginx")
    call = request_body(
        "tools/call", {"name": "count_to", "arguments": {"n": 5}, "_meta": {"progressToken": 1}}, era=HANDSHAKE, id=2
    )
    with stateful.client() as http:
        opened = http.post(
            stateful.url, headers=request_headers("initialize", era=HANDSHAKE, token=token), json=INITIALIZE
        )
        session = opened.headers["mcp-session-id"]
        headers = {**request_headers("tools/call", era=HANDSHAKE, token=token), "Mcp-Session-Id": session}
        with http.stream("POST", stateful.url, headers=headers, json=call) as stream:
            events = EventStream(stream)
            priming, first = events.next_event(), events.next_event()
        time.sleep(1.3)
        resumed_headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "text/event-stream",
            "MCP-Protocol-Version": HANDSHAKE,
            "Mcp-Session-Id": session,
            "Last-Event-ID": first.id or "",
        }
        missed = []
        with http.stream("GET", stateful.url, headers=resumed_headers) as resumed:
            assert resumed.status_code == 200
            assert resumed.headers["strict-transport-security"] == HSTS
            events = EventStream(resumed)
            while not missed or "result" not in missed[-1]:
                missed.append(events.next_event().json())
    assert (priming.data, priming.retry) == ("", 1000)
    assert first.json()["params"]["progress"] == 1
    assert [event.get("params", {}).get("progress") for event in missed] == [2, 3, 4, 5, None]
    assert missed[-1]["result"]["content"] == [{"type": "text", "text": "Counted to 5."}]


@pytest.mark.parametrize("token", [pytest.param(None, id="no token"), pytest.param("expired", id="expired")])
def test_a_refused_token_gets_the_same_challenges_on_every_endpoint(
    stateful: StatefulInstances, token: str | None
) -> None:
    if token == "expired":
        token = stateful.token(exp=1_000_000)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    session = f"{next(iter(stateful.instances))}.{'0' * 32}"
    with stateful.client() as http:
        mcp = http.post(
            stateful.url, headers={**request_headers("tools/list"), **headers}, json=request_body("tools/list")
        )
        stream = http.get(stateful.origin + "/mcp/sse", headers={**headers, "Accept": "text/event-stream"})
        message = http.post(stateful.origin + f"/mcp/messages/?session_id={session}", headers=headers, json=INITIALIZE)
    metadata = f'resource_metadata="{stateful.origin}/.well-known/oauth-protected-resource/mcp"'
    assert mcp.status_code == 401
    assert all(metadata in challenge for challenge in mcp.headers.get_list("www-authenticate"))
    for response in (stream, message):
        assert (response.status_code, response.json()) == (401, mcp.json())
        assert response.headers.get_list("www-authenticate") == mcp.headers.get_list("www-authenticate")
        assert response.headers["strict-transport-security"] == HSTS


def test_the_sessions_of_an_instance_that_is_down_are_not_found(stateful: StatefulInstances) -> None:
    """nginx answers for the instance: 404, so that the client opens a new session, which goes to one that runs."""
    token = stateful.token()
    gone = f"{stateful.down}.{'0' * 32}"
    with stateful.client() as http:
        headers = {**request_headers("tools/list", era=HANDSHAKE, token=token), "Mcp-Session-Id": gone}
        streamable = http.post(stateful.url, headers=headers, json=request_body("tools/list", era=HANDSHAKE))
        legacy = http.post(
            stateful.origin + f"/mcp/messages/?session_id={gone}",
            headers={"Authorization": f"Bearer {token}"},
            json=INITIALIZE,
        )
        reopened = http.post(
            stateful.url, headers=request_headers("initialize", era=HANDSHAKE, token=token), json=INITIALIZE
        )
    for response in (streamable, legacy):
        assert (response.status_code, response.headers["content-type"]) == (404, "application/json")
        assert response.json() == SESSION_NOT_FOUND
    assert reopened.status_code == 200
    assert instance_of(reopened.headers["mcp-session-id"]) in stateful.instances


def test_an_unknown_instance_name_reaches_an_instance_that_does_not_know_it(stateful: StatefulInstances) -> None:
    token = stateful.token()
    with stateful.client() as http:
        headers = {**request_headers("tools/list", era=HANDSHAKE, token=token), "Mcp-Session-Id": f"nowhere.{'0' * 32}"}
        response = http.post(stateful.url, headers=headers, json=request_body("tools/list", era=HANDSHAKE))
    assert (response.status_code, response.json()) == (404, SESSION_NOT_FOUND)


def test_logs_hold_no_token(stateful: StatefulInstances) -> None:
    # Last in the module: every request before it has been logged once this one's lines are there.
    agent = f"last-request-{uuid.uuid4().hex}"
    token = stateful.token()
    with stateful.client() as http:
        headers = {**request_headers("initialize", era=HANDSHAKE, token=token), "User-Agent": agent}
        assert http.post(stateful.url, headers=headers, json=INITIALIZE).status_code == 200
    # nginx writes its access line after the response, gunicorn its own when the body is closed.
    nginx_lines = lines_with(agent, stateful.nginx.access_log)
    instance_lines = lines_with(agent, lambda: "".join(instance.log() for instance in stateful.instances.values()))
    assert (len(nginx_lines), len(instance_lines)) == (1, 1), (nginx_lines, instance_lines)
    assert_no_token(stateful.nginx.log() + "".join(instance.log() for instance in stateful.instances.values()))


def directives(path: Path) -> Counter[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return Counter(line for line in lines if line and not line.startswith("#"))


def test_the_stateful_variant_is_the_site_file_plus_session_routing() -> None:
    """Nothing of mcp-server.conf (TLS, headers, limits, timeouts) is missing from the variant or changed in it."""
    site, variant = directives(SITE_FILE), directives(STATEFUL_SITE_FILE)
    assert site - variant == Counter({"proxy_pass http://mcp_server;": 1})  # /mcp goes to $mcp_instance instead
    assert variant["proxy_pass http://$mcp_instance;"] == 1
    assert variant["error_page 502 504 = @instance_unreachable;"] == 1


def test_every_stream_pings_well_within_the_proxy_read_timeout() -> None:
    """A quiet stream (a session's GET stream, an HTTP+SSE stream between calls) gets a comment every 15 s."""
    for path in (SITE_FILE, STATEFUL_SITE_FILE):
        assert directives(path)["proxy_read_timeout 1h;"] == 1
    assert EventSourceResponse.DEFAULT_PING_INTERVAL == 15 < 3600
