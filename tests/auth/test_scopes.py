"""Scope requirements per tool and the implication hierarchy (MCP: a broader scope implies narrower ones)."""

from __future__ import annotations

import pytest

from app.auth.scopes import ScopePolicy
from app.settings import Settings

HIERARCHY = {
    "todo:admin": ["todo:write", "todo:delete"],
    "todo:write": ["todo:read"],
}


class TestExpand:
    @pytest.mark.parametrize(
        ("granted", "expected"),
        [
            pytest.param([], set(), id="nothing"),
            pytest.param(["todo:read"], {"todo:read"}, id="narrowest"),
            pytest.param(["todo:write"], {"todo:write", "todo:read"}, id="one-step"),
            pytest.param(["todo:admin"], {"todo:admin", "todo:write", "todo:delete", "todo:read"}, id="transitive"),
            pytest.param(["profile", "todo:write"], {"profile", "todo:write", "todo:read"}, id="unrelated-kept"),
            pytest.param(["todo:write", "todo:write"], {"todo:write", "todo:read"}, id="duplicates"),
        ],
    )
    def test_expand(self, granted: list[str], expected: set[str]) -> None:
        assert ScopePolicy(HIERARCHY).expand(granted) == frozenset(expected)

    def test_no_hierarchy_expands_to_the_granted_scopes(self) -> None:
        assert ScopePolicy().expand(["todo:write"]) == frozenset({"todo:write"})

    def test_cycles_terminate(self) -> None:
        policy = ScopePolicy({"a": ["b"], "b": ["c"], "c": ["a"]})
        assert policy.expand(["b"]) == frozenset({"a", "b", "c"})

    def test_hierarchy_from_settings(self) -> None:
        settings = Settings.from_mapping(
            {
                "MCP_RESOURCE_URL": "https://mcp.example.com/mcp",
                "MCP_ISSUER": "https://login.example.com",
                "MCP_SCOPE_HIERARCHY": "todo:admin=todo:write; todo:write=todo:read",
            }
        )
        policy = ScopePolicy(settings.scope_hierarchy)
        assert policy.expand(["todo:admin"]) == frozenset({"todo:admin", "todo:write", "todo:read"})


class TestMissing:
    @pytest.mark.parametrize(
        ("granted", "required", "missing"),
        [
            pytest.param(["todo:read"], ["todo:read"], set(), id="exact"),
            pytest.param(["todo:write"], ["todo:read"], set(), id="implied"),
            pytest.param(["todo:admin"], ["todo:read", "todo:delete"], set(), id="implied-transitively"),
            pytest.param(["todo:read"], ["todo:write"], {"todo:write"}, id="narrower-does-not-imply-broader"),
            pytest.param([], ["todo:read", "todo:write"], {"todo:read", "todo:write"}, id="nothing-granted"),
            pytest.param(["todo:write"], ["todo:read", "todo:delete"], {"todo:delete"}, id="partly"),
            pytest.param(["todo:read"], [], set(), id="nothing-required"),
            pytest.param([], [], set(), id="nothing-at-all"),
        ],
    )
    def test_missing(self, granted: list[str], required: list[str], missing: set[str]) -> None:
        assert ScopePolicy(HIERARCHY).missing(granted, required) == frozenset(missing)

    def test_accepts_one_shot_iterables(self) -> None:
        assert ScopePolicy(HIERARCHY).missing(iter(["todo:write"]), iter(["todo:read", "x"])) == frozenset({"x"})


class TestToolRequirements:
    def test_unknown_tool_requires_nothing(self) -> None:
        assert ScopePolicy().required_for_tool("whoami") == frozenset()

    def test_require_and_read_back(self) -> None:
        policy = ScopePolicy()
        policy.require_for_tool("add_todo", ["todo:write"])
        policy.require_for_tool("list_todos", ("todo:read",))
        policy.require_for_tool("list_todos", ["todo:read", "todo:list"])
        assert policy.required_for_tool("add_todo") == frozenset({"todo:write"})
        assert policy.required_for_tool("list_todos") == frozenset({"todo:read", "todo:list"})
        assert policy.tool_requirements() == {
            "add_todo": frozenset({"todo:write"}),
            "list_todos": frozenset({"todo:read", "todo:list"}),
        }

    def test_tool_requirements_is_a_copy(self) -> None:
        policy = ScopePolicy()
        policy.require_for_tool("add_todo", ["todo:write"])
        policy.tool_requirements()["add_todo"] = frozenset()
        assert policy.required_for_tool("add_todo") == frozenset({"todo:write"})


class TestResourceAndPromptRequirements:
    def test_concrete_uri_then_templates_in_order(self) -> None:
        from app.mcp_calls import MCPCall

        policy = ScopePolicy()
        policy.require_for_template("todo://{id}", lambda uri: uri.startswith("todo://"), ["todo:read"])
        policy.require_for_resource("todo://all", ["todo:admin"])
        policy.require_for_template("note://{folder}/{name}", lambda uri: uri.count("/") == 3, ["notes:read"])
        policy.require_for_prompt("plan", ["todo:read"])
        assert policy.required_for(MCPCall("resources/read", "todo://all")) == {"todo:admin"}
        assert policy.required_for(MCPCall("resources/read", "todo://7")) == {"todo:read"}
        assert policy.required_for(MCPCall("resources/read", "note://a/b")) == {"notes:read"}
        assert policy.required_for(MCPCall("resources/read", "other://x")) == frozenset()
        assert policy.required_for(MCPCall("prompts/get", "plan")) == {"todo:read"}
        assert policy.required_for(MCPCall("prompts/get", "unknown")) == frozenset()
        assert policy.required_for(MCPCall("resources/list")) == frozenset()
        assert policy.resource_requirements() == {
            "todo://all": {"todo:admin"},
            "todo://{id}": {"todo:read"},
            "note://{folder}/{name}": {"notes:read"},
        }
