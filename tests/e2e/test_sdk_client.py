"""The official SDK client against the real gunicorn, in both protocol eras."""

from __future__ import annotations

import json
import re
import time

import pytest
from mcp.shared.exceptions import MCPError

from tests.support.mcp_client import connect
from tests.support.mcp_client import json_of
from tests.support.mcp_client import text_of
from tests.support.servers import RunningServer
from tests.support.token_scan import find_tokens

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]
ERAS = pytest.mark.parametrize("era", ["2026-07-28", "2025-11-25"])
ALL_TOOLS = ["whoami", "greet_user", "list_todos", "add_todo", "delete_todo", "count_to"]


@ERAS
async def test_lists_every_example_tool(gunicorn_server: RunningServer, era: str) -> None:
    async with connect(gunicorn_server.url, gunicorn_server.token(), era=era) as client:
        tools = await client.list_tools()
    assert [tool.name for tool in tools.tools] == ALL_TOOLS
    count_to = next(tool for tool in tools.tools if tool.name == "count_to")
    assert count_to.input_schema["properties"]["n"]["minimum"] == 1
    assert count_to.input_schema["properties"]["n"]["maximum"] == 50


@ERAS
async def test_whoami_sees_the_verified_claims(gunicorn_server: RunningServer, era: str) -> None:
    token = gunicorn_server.token("todo:read", sub="carol", client_id="cli-7", org_id="org-42", exp=2_000_000_000)
    async with connect(gunicorn_server.url, token, era=era) as client:
        result = await client.call_tool("whoami", {})
    assert json_of(result) == {
        "sub": "carol",
        "client_id": "cli-7",
        "scopes": ["todo:read"],
        "issuer": gunicorn_server.issuer.issuer,
        "org_id": "org-42",
        "expires_at": 2_000_000_000,
    }


@ERAS
async def test_greet_user(gunicorn_server: RunningServer, era: str) -> None:
    async with connect(gunicorn_server.url, gunicorn_server.token(), era=era) as client:
        assert text_of(await client.call_tool("greet_user", {"name": "Ada"})) == "Hello, Ada!"
        empty = await client.call_tool("greet_user", {"name": "  "})
    assert empty.is_error
    assert empty.content[0].text == "Error executing tool greet_user: name must not be empty"


@ERAS
async def test_todos_are_private_to_each_user(gunicorn_server: RunningServer, era: str) -> None:
    scopes = ("todo:read", "todo:write", "todo:delete")
    dave, erin = f"dave-{era}", f"erin-{era}"
    async with connect(gunicorn_server.url, gunicorn_server.token(*scopes, sub=dave), era=era) as client:
        added = await client.call_tool("add_todo", {"title": "  buy milk  "})
        assert added.structured_content["title"] == "buy milk"
        todo_id = added.structured_content["id"]
        listed = await client.call_tool("list_todos", {})
        assert [t["title"] for t in listed.structured_content["todos"]] == ["buy milk"]

    async with connect(gunicorn_server.url, gunicorn_server.token(*scopes, sub=erin), era=era) as client:
        assert (await client.call_tool("list_todos", {})).structured_content == {"todos": []}
        stolen = await client.call_tool("delete_todo", {"id": todo_id})
        assert stolen.is_error
        assert stolen.content[0].text == f"Error executing tool delete_todo: no todo with id {todo_id}"

    async with connect(gunicorn_server.url, gunicorn_server.token(*scopes, sub=dave), era=era) as client:
        deleted = await client.call_tool("delete_todo", {"id": todo_id})
        assert deleted.structured_content == {"deleted": todo_id}
        assert (await client.call_tool("list_todos", {})).structured_content == {"todos": []}


@ERAS
async def test_bad_todo_input_is_a_tool_error_and_writes_nothing(gunicorn_server: RunningServer, era: str) -> None:
    token = gunicorn_server.token("todo:read", "todo:write", "todo:delete", sub=f"frank-{era}")
    async with connect(gunicorn_server.url, token, era=era) as client:
        empty = await client.call_tool("add_todo", {"title": "   "})
        long = await client.call_tool("add_todo", {"title": "x" * 501})
        unknown = await client.call_tool("delete_todo", {"id": 999_999})
        listed = await client.call_tool("list_todos", {})
    prefix = "Error executing tool"
    assert (empty.is_error, empty.content[0].text) == (True, f"{prefix} add_todo: title must not be empty")
    assert (long.is_error, long.content[0].text) == (
        True,
        f"{prefix} add_todo: title must be at most 500 characters (got 501)",
    )
    assert (unknown.is_error, unknown.content[0].text) == (True, f"{prefix} delete_todo: no todo with id 999999")
    assert listed.structured_content == {"todos": []}


@ERAS
async def test_progress_arrives_while_the_tool_runs(gunicorn_server: RunningServer, era: str) -> None:
    arrivals: list[tuple[float, float]] = []
    async with connect(gunicorn_server.url, gunicorn_server.token(), era=era) as client:
        start = time.monotonic()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            arrivals.append((progress, time.monotonic() - start))

        result = await client.call_tool("count_to", {"n": 5}, progress_callback=on_progress)
        finished = time.monotonic() - start
    assert text_of(result) == "Counted to 5."
    assert [progress for progress, _ in arrivals] == [1, 2, 3, 4, 5]
    times = [at for _, at in arrivals]
    # Streamed, not buffered: the first step arrives about 0.2 s in, long before
    # the 1 s the whole call takes, and the steps come roughly 0.2 s apart.
    assert times[0] < 0.6, times
    assert finished >= 0.95, finished
    assert all(later - earlier > 0.1 for earlier, later in zip(times, times[1:], strict=False)), times


@ERAS
async def test_count_to_rejects_out_of_range(gunicorn_server: RunningServer, era: str) -> None:
    async with connect(gunicorn_server.url, gunicorn_server.token(), era=era) as client:
        result = await client.call_tool("count_to", {"n": 51})
    assert result.is_error
    assert "less than or equal to 50" in result.content[0].text


@ERAS
async def test_missing_scope_is_an_http_403_before_the_tool_runs(gunicorn_server: RunningServer, era: str) -> None:
    token = gunicorn_server.token("todo:read", sub=f"gina-{era}")
    async with connect(gunicorn_server.url, token, era=era) as client:
        with pytest.raises(MCPError):
            await client.call_tool("add_todo", {"title": "not allowed"})
    writer = gunicorn_server.token("todo:write", sub=f"gina-{era}")
    async with connect(gunicorn_server.url, writer, era=era) as client:
        # todo:write implies todo:read, and nothing was written by the refused call.
        assert (await client.call_tool("list_todos", {})).structured_content == {"todos": []}


def test_both_workers_served_requests(gunicorn_server: RunningServer) -> None:
    pids = set(re.findall(r"<(\d+)> \"POST /mcp", gunicorn_server.process.log()))
    assert len(pids) == 2, gunicorn_server.process.log()[-2000:]


def test_the_logs_never_contain_a_token(gunicorn_server: RunningServer) -> None:
    assert find_tokens(gunicorn_server.process.log()) == []


@ERAS
async def test_resources_and_prompts(gunicorn_server: RunningServer, era: str) -> None:
    token = gunicorn_server.token("todo:read", "todo:write", sub=f"res-{era}")
    async with connect(gunicorn_server.url, token, era=era) as client:
        todo = (await client.call_tool("add_todo", {"title": "water plants"})).structured_content
        templates = await client.list_resource_templates()
        assert [t.uri_template for t in templates.resource_templates] == ["todo://{id}"]
        read = await client.read_resource(f"todo://{todo['id']}")
        assert json.loads(read.contents[0].text) == todo
        prompt = await client.get_prompt("plan_my_day")
    assert prompt.messages[0].content.text.startswith(f"Here are my todos:\n- water plants (todo://{todo['id']})")


@ERAS
async def test_resource_without_scope_is_refused(gunicorn_server: RunningServer, era: str) -> None:
    async with connect(gunicorn_server.url, gunicorn_server.token(sub=f"noscope-{era}"), era=era) as client:
        with pytest.raises(MCPError):
            await client.read_resource("todo://1")
        with pytest.raises(MCPError):
            await client.get_prompt("plan_my_day")
