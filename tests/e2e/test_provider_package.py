"""A tool provider in a package of its own (tests/provider_package), pip-installed and served by the real gunicorn.

The package is installed into this virtualenv the way a user installs theirs
(pip, offline: no build isolation, no dependencies), then served twice: named
by MCP_TOOLS, and found by its entry point with MCP_TOOLS unset (the examples
then drop out). The official SDK client calls it with a token lacking the
scope (HTTP 403 insufficient_scope, the step-up challenge) and with one that
has it. The package is uninstalled when the module is done, so no other test
ever sees it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.shared.exceptions import MCPError

from app.settings import DEFAULT_DPOP_ALGORITHMS
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import result_of
from tests.support.mcp_client import connect
from tests.support.servers import BIN
from tests.support.servers import ROOT
from tests.support.servers import RunningServer
from tests.support.servers import start_app

pytestmark = [pytest.mark.e2e]
ERAS = pytest.mark.parametrize("era", ["2026-07-28", "2025-11-25"])
PACKAGE = ROOT / "tests" / "provider_package"
DISTRIBUTION = "notes-mcp"
INSTRUCTIONS = "Notes of the signed-in user: add_note writes one, list_notes reads them."


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def installed() -> bool:
    return pip("show", "--quiet", DISTRIBUTION).returncode == 0


@pytest.fixture(scope="module")
def notes_package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """notes-mcp installed into the virtualenv for this module only."""
    if installed():  # left by a run that was killed before it could clean up
        pip("uninstall", "--yes", DISTRIBUTION)
    # A copy, so the build leaves nothing in the repository (build/, *.egg-info).
    source = tmp_path_factory.mktemp("notes-mcp") / "notes-mcp"
    shutil.copytree(PACKAGE, source)
    done = pip("install", "--quiet", "--no-build-isolation", "--no-deps", "--no-index", str(source))
    assert done.returncode == 0, done.stderr
    try:
        yield
    finally:
        assert pip("uninstall", "--yes", DISTRIBUTION).returncode == 0
        assert not installed()


@pytest.fixture(scope="module")
def named_server(
    notes_package: None, issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    server = start_app(
        issuer, tmp_path_factory.mktemp("named"), MCP_TOOLS="notes_mcp:register", MCP_SCOPES_SUPPORTED="notes:read"
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def discovered_server(
    notes_package: None, issuer: MockIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    server = start_app(issuer, tmp_path_factory.mktemp("discovered"), MCP_SCOPES_SUPPORTED="notes:read")
    yield server
    server.stop()


class Refusals:
    """The HTTP answers to the client's POSTs, as the SDK client received them."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str | None, Any]] = []

    async def __call__(self, response: httpx2.Response) -> None:
        if response.request.method == "POST" and response.status_code >= 400:
            await response.aread()
            self.seen.append((response.status_code, response.headers.get("www-authenticate"), response.json()))


async def calls_with_and_without_the_scope(server: RunningServer, era: str) -> None:
    sub = f"nina-{era}"
    refusals = Refusals()
    async with connect(
        server.url, server.token("notes:read", sub=sub), era=era, event_hooks={"response": [refusals]}
    ) as client:
        listed = await client.list_tools()
        assert [tool.name for tool in listed.tools] == ["add_note", "list_notes"]
        with pytest.raises(MCPError):
            await client.call_tool("add_note", {"text": "not allowed"})
        assert (await client.call_tool("list_notes", {})).structured_content == {"result": []}
    assert refusals.seen == [
        (
            403,
            'Bearer error="insufficient_scope", error_description="This call requires the scopes: notes:write", '
            f'scope="notes:write", resource_metadata="{server.base}/.well-known/oauth-protected-resource/mcp", '
            'DPoP error="insufficient_scope", error_description="This call requires the scopes: notes:write", '
            f'algs="{" ".join(DEFAULT_DPOP_ALGORITHMS)}", '
            f'scope="notes:write", resource_metadata="{server.base}/.well-known/oauth-protected-resource/mcp"',
            {"error": "insufficient_scope", "error_description": "This call requires the scopes: notes:write"},
        )
    ]

    async with connect(server.url, server.token("notes:write", sub=sub), era=era) as client:
        added = await client.call_tool("add_note", {"text": "buy milk"})
        note_id = added.structured_content["result"]
        # notes:write implies notes:read: the hierarchy the package declares.
        assert (await client.call_tool("list_notes", {})).structured_content == {"result": ["buy milk"]}
        read = await client.read_resource(f"note://{note_id}")
        assert [content.text for content in read.contents] == ["buy milk"]
        prompt = await client.get_prompt("summarize_notes")
        assert prompt.messages[0].content.text == "Summarize my notes (list_notes has them) in three sentences."


@ERAS
@pytest.mark.anyio
async def test_named_by_mcp_tools(named_server: RunningServer, era: str) -> None:
    await calls_with_and_without_the_scope(named_server, era)


@ERAS
@pytest.mark.anyio
async def test_found_by_its_entry_point(discovered_server: RunningServer, era: str) -> None:
    await calls_with_and_without_the_scope(discovered_server, era)


def test_the_packages_instructions_reach_the_client(discovered_server: RunningServer) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    headers = {
        "Authorization": f"Bearer {discovered_server.token()}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-11-25",
    }
    answer = httpx2.post(discovered_server.url, json=body, headers=headers)
    assert answer.status_code == 200
    assert result_of(answer.headers["content-type"], answer.content)["result"]["instructions"] == INSTRUCTIONS


@pytest.mark.parametrize("named", [True, False], ids=["named", "entry-point"])
def test_flask_mcp_tools_lists_them(notes_package: None, issuer: MockIssuer, tmp_path: Path, named: bool) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "MCP_RESOURCE_URL": "https://mcp.example.com/mcp",
        "MCP_ISSUER": issuer.issuer,
        "MCP_INSTANCE_PATH": str(tmp_path),
        **({"MCP_TOOLS": "notes_mcp:register"} if named else {}),
    }
    done = subprocess.run(
        [str(BIN / "flask"), "--app", "wsgi", "mcp", "tools"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    provider = "notes_mcp:register" if named else "notes (notes_mcp:register)"
    assert done.stdout == (
        "Tools (2):\n"
        f"  add_note         notes:write      {provider}\n"
        f"  list_notes       notes:read       {provider}\n"
        "Resources (1):\n"
        f"  note://{{id}}      notes:read       {provider}\n"
        "Prompts (1):\n"
        f"  summarize_notes  notes:read       {provider}\n"
        "Scope hierarchy (declared by the tools):\n"
        "  notes:write implies notes:read\n"
        "Scopes advertised in the metadata: none\n"
    )
