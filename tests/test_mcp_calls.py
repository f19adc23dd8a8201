"""Reading the JSON-RPC body once: methods and targets, single messages and batches."""

from __future__ import annotations

import json

import pytest

from app.mcp_calls import MCPCall
from app.mcp_calls import MCPRequest
from app.mcp_calls import parse


def body(value: object) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(body({"method": "tools/list"}), MCPRequest((MCPCall("tools/list"),)), id="list"),
        pytest.param(
            body({"method": "tools/call", "params": {"name": "add_todo"}}),
            MCPRequest((MCPCall("tools/call", "add_todo"),)),
            id="call",
        ),
        pytest.param(
            body({"method": "resources/read", "params": {"uri": "todo://1"}}),
            MCPRequest((MCPCall("resources/read", "todo://1"),)),
            id="read",
        ),
        pytest.param(
            body({"method": "prompts/get", "params": {"name": "plan"}}),
            MCPRequest((MCPCall("prompts/get", "plan"),)),
            id="prompt",
        ),
        pytest.param(
            body({"method": "tools/call", "params": {"name": 7}}),
            MCPRequest((MCPCall("tools/call"),)),
            id="non-string name",
        ),
        pytest.param(body({"method": "tools/call"}), MCPRequest((MCPCall("tools/call"),)), id="no params"),
        pytest.param(
            body([{"method": "tools/call", "params": {"name": "a"}}, {"method": "ping"}, 5, {"id": 1}]),
            MCPRequest((MCPCall("tools/call", "a"), MCPCall("ping"))),
            id="batch",
        ),
        pytest.param(b"{nope", MCPRequest(), id="not json"),
        pytest.param(b"[" * 100_000, MCPRequest(), id="nested too deep"),
        pytest.param(body("tools/call"), MCPRequest(), id="a string"),
    ],
)
def test_parse(raw: bytes, expected: MCPRequest) -> None:
    assert parse(raw) == expected


def test_method_and_targets() -> None:
    batch = parse(body([{"method": "tools/call", "params": {"name": "a"}}, {"method": "tools/call", "params": {}}]))
    assert batch.method is None
    assert batch.targets("tools/call") == ["a"]
    assert parse(body({"method": "ping"})).method == "ping"
