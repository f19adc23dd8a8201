"""Development mode on another port, with the real ``flask run`` and ``make run``: every URL names the port served.

Without MCP_RESOURCE_URL the server takes the port from ``flask run --port``
(its Click context, while the app loads); with MCP_RESOURCE_URL naming
another port, a request to the port served is answered 421 with the reason.
"""

from __future__ import annotations

import html
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from app.settings import DEFAULT_DPOP_ALGORITHMS
from tests.e2e.conftest import DevServer
from tests.e2e.test_dev_authorization_server import provider
from tests.e2e.test_dev_authorization_server import sdk_client
from tests.support.mcp_client import connect
from tests.support.mcp_client import json_of
from tests.support.oauth import ConsentBrowser
from tests.support.oauth import MemoryTokenStorage
from tests.support.servers import BIN
from tests.support.servers import ROOT
from tests.support.servers import ServerProcess
from tests.support.servers import free_port

pytestmark = [pytest.mark.e2e]


def flask_run(folder: Path, port: int, **env: str) -> ServerProcess:
    args = [str(BIN / "flask"), "--app", "wsgi", "run", "--port", str(port)]
    settings = {"MCP_DEV": "1", "MCP_INSTANCE_PATH": str(folder / "instance"), **env}
    # Any answer means it listens (one configured for another port answers even /healthz with 421).
    return ServerProcess(args, settings, folder / "flask.log", f"http://127.0.0.1:{port}/healthz", any_status=True)


@pytest.fixture(scope="module")
def flask_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    folder = tmp_path_factory.mktemp("flask-run")
    port = free_port()
    process = flask_run(folder, port)
    yield DevServer(process, f"http://127.0.0.1:{port}", folder / "instance")
    process.stop()


def test_the_landing_page_names_the_port(flask_server: DevServer) -> None:
    page = httpx2.get(flask_server.base + "/").text
    assert f"<pre>claude mcp add --transport http flask-mcp-server {flask_server.url}</pre>" in page
    assert f'<a href="{flask_server.base}/.well-known/oauth-protected-resource/mcp">' in page
    assert f'<a href="{flask_server.base}/.well-known/oauth-authorization-server/dev-issuer">' in page
    assert f'<a href="{flask_server.base}/dev-issuer/jwks.json">' in page
    assert "127.0.0.1:5000" not in page
    assert f"connect an MCP client to {flask_server.url}" in flask_server.process.log(), flask_server.process.log()


def test_the_challenge_and_the_metadata_name_the_port(flask_server: DevServer) -> None:
    refused = httpx2.post(flask_server.url, json={})
    assert refused.status_code == 401
    metadata = f'resource_metadata="{flask_server.base}/.well-known/oauth-protected-resource/mcp"'
    algs = " ".join(DEFAULT_DPOP_ALGORITHMS)
    assert refused.headers["www-authenticate"] == (
        f'Bearer scope="todo:read todo:write todo:delete", {metadata}, '
        f'DPoP algs="{algs}", scope="todo:read todo:write todo:delete", {metadata}'
    )
    resource = httpx2.get(flask_server.base + "/.well-known/oauth-protected-resource/mcp").json()
    assert (resource["resource"], resource["authorization_servers"]) == (flask_server.url, [flask_server.issuer])
    metadata = httpx2.get(flask_server.base + "/.well-known/oauth-authorization-server/dev-issuer").json()
    assert metadata["issuer"] == flask_server.issuer
    for endpoint in ("authorization_endpoint", "token_endpoint", "registration_endpoint", "jwks_uri"):
        assert metadata[endpoint].startswith(flask_server.issuer + "/"), metadata


@pytest.mark.anyio
async def test_an_oauth_client_signs_in_on_that_port(flask_server: DevServer) -> None:
    browser, storage = ConsentBrowser("dora"), MemoryTokenStorage()
    async with sdk_client(flask_server, provider(flask_server, browser, storage)) as client:
        whoami = json_of(await client.call_tool("whoami", {}))
    assert (whoami["sub"], whoami["issuer"]) == ("dora", flask_server.issuer)
    assert browser.authorization_urls[0].startswith(flask_server.issuer + "/authorize?")


@pytest.mark.anyio
async def test_the_token_command_the_landing_page_shows_works(flask_server: DevServer) -> None:
    page = httpx2.get(flask_server.base + "/").text
    command = html.unescape(page.split("<code>MCP_DEV=1 ", 1)[1].split("</code>", 1)[0])
    assert command.startswith(f"MCP_RESOURCE_URL={flask_server.url} .venv/bin/flask --app wsgi mcp token --sub alice")
    assignment, *args = shlex.split(command)
    variable, _, value = assignment.partition("=")
    env = {
        "PATH": "/usr/bin:/bin",
        "MCP_DEV": "1",
        variable: value,
        "MCP_INSTANCE_PATH": str(flask_server.instance_path),
    }
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    async with connect(flask_server.url, done.stdout.strip()) as client:
        whoami = json_of(await client.call_tool("whoami", {}))
    assert (whoami["sub"], whoami["scopes"]) == ("alice", ["todo:read", "todo:write", "todo:delete"])


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("127.0.0.1:5000", id="the-default-port"),
        pytest.param("localhost:5001", id="another-loopback-port"),
    ],
)
def test_another_port_in_host_is_told_where_the_server_is(flask_server: DevServer, host: str) -> None:
    for path in ("/mcp", "/", "/.well-known/oauth-protected-resource/mcp", "/dev-issuer/authorize"):
        response = httpx2.get(flask_server.base + path, headers={"Host": host})
        assert response.status_code == 421, path
        assert response.json() == {
            "error": "misdirected_request",
            "error_description": f"This development server is configured for {flask_server.url} (MCP_RESOURCE_URL), "
            f"but the request was sent to {host}: connect to that URL, or set MCP_RESOURCE_URL to the one clients use",
        }


def test_mcp_resource_url_naming_another_port(tmp_path: Path) -> None:
    port = free_port()
    configured = "http://127.0.0.1:5000/mcp"
    process = flask_run(tmp_path, port, MCP_RESOURCE_URL=configured)
    try:
        response = httpx2.get(f"http://127.0.0.1:{port}/")
        metadata = httpx2.get(f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp")
    finally:
        process.stop()
    description = (
        f"This development server is configured for {configured} (MCP_RESOURCE_URL), but the request was sent to "
        f"127.0.0.1:{port}: connect to that URL, or set MCP_RESOURCE_URL to the one clients use"
    )
    assert (response.status_code, response.json()["error_description"]) == (421, description)
    assert (metadata.status_code, metadata.json()["error_description"]) == (421, description)
    assert (
        f"MCP_RESOURCE_URL is {configured} but flask run listens on port {port}: clients are sent to the URL, and "
        f"this server answers requests on port {port} with 421 (unset MCP_RESOURCE_URL to advertise the port served)"
    ) in process.log()


def test_make_run_takes_the_port(tmp_path: Path) -> None:
    port = free_port()
    process = ServerProcess(
        ["make", "--no-print-directory", "run", f"PORT={port}"],
        {"MCP_INSTANCE_PATH": str(tmp_path / "instance")},
        tmp_path / "make.log",
        f"http://127.0.0.1:{port}/healthz",
        process_group=True,
    )
    try:
        resource = httpx2.get(f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp").json()
    finally:
        process.stop()
    assert resource["resource"] == f"http://127.0.0.1:{port}/mcp"
    log = process.log()
    assert f"  MCP endpoint:  http://127.0.0.1:{port}/mcp " in log
    assert f"claude mcp add --transport http flask-mcp-server http://127.0.0.1:{port}/mcp" in log
