"""Scopes: what each tool, resource and prompt requires, and which granted scopes imply which.

MCP 2026-07-28 authorization, Scope Challenge Handling: "Servers MUST account
for scope hierarchies, where a broader scope implies narrower ones", and
"SHOULD include all scopes required for the current operation in a single
challenge".
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping

from app.mcp_calls import MCPCall


class ScopePolicy:
    """Scope requirements per MCP primitive, and the implication hierarchy."""

    def __init__(self, hierarchy: Mapping[str, Iterable[str]] | None = None) -> None:
        self._implies = {broad: frozenset(narrow) for broad, narrow in (hierarchy or {}).items()}
        self._tools: dict[str, frozenset[str]] = {}
        self._prompts: dict[str, frozenset[str]] = {}
        self._resources: dict[str, frozenset[str]] = {}
        self._templates: list[tuple[str, Callable[[str], bool], frozenset[str]]] = []
        self._descriptions: dict[str, str] = {}

    def require_for_tool(self, name: str, scopes: Iterable[str]) -> None:
        self._tools[name] = frozenset(scopes)

    def require_for_prompt(self, name: str, scopes: Iterable[str]) -> None:
        self._prompts[name] = frozenset(scopes)

    def require_for_resource(self, uri: str, scopes: Iterable[str]) -> None:
        """A concrete resource URI."""
        self._resources[uri] = frozenset(scopes)

    def require_for_template(self, template: str, matches: Callable[[str], bool], scopes: Iterable[str]) -> None:
        """An RFC 6570 template such as ``note://{id}``; ``matches(uri)`` says whether the SDK serves ``uri`` by it."""
        self._templates.append((template, matches, frozenset(scopes)))

    def imply(self, broad: str, narrow: Iterable[str]) -> None:
        """A token granted ``broad`` may also do what each of ``narrow`` allows (added to what is declared)."""
        self._implies[broad] = self._implies.get(broad, frozenset()) | frozenset(narrow)

    def replace_hierarchy(self, hierarchy: Mapping[str, Iterable[str]]) -> None:
        """The operator's hierarchy (MCP_SCOPE_HIERARCHY) in place of what the tools declared."""
        self._implies = {broad: frozenset(narrow) for broad, narrow in hierarchy.items()}

    def hierarchy(self) -> dict[str, frozenset[str]]:
        return dict(self._implies)

    def describe(self, scope: str, description: str) -> None:
        """A one-line, user-facing description (a consent page shows it)."""
        self._descriptions[scope] = description

    def description(self, scope: str) -> str | None:
        return self._descriptions.get(scope)

    def known_scopes(self) -> list[str]:
        """Every scope a tool, resource or prompt requires or the hierarchy names, sorted."""
        scopes = set(self._descriptions)
        for required in (*self._tools.values(), *self._prompts.values(), *self.resource_requirements().values()):
            scopes |= required
        for broad, narrow in self._implies.items():
            scopes |= {broad, *narrow}
        return sorted(scopes)

    def tool_requirements(self) -> dict[str, frozenset[str]]:
        return dict(self._tools)

    def prompt_requirements(self) -> dict[str, frozenset[str]]:
        return dict(self._prompts)

    def resource_requirements(self) -> dict[str, frozenset[str]]:
        return {**self._resources, **{template: scopes for template, _, scopes in self._templates}}

    def required_for_tool(self, name: str) -> frozenset[str]:
        return self._tools.get(name, frozenset())

    def required_for_resource(self, uri: str) -> frozenset[str]:
        """The scopes of the resource the SDK would serve for ``uri``: a concrete one first, then templates in order."""
        if uri in self._resources:
            return self._resources[uri]
        for _, matches, scopes in self._templates:
            if matches(uri):
                return scopes
        return frozenset()

    def required_for(self, call: MCPCall) -> frozenset[str]:
        """What one JSON-RPC message needs; methods that name nothing need nothing (lists show everything)."""
        if call.target is None:
            return frozenset()
        if call.method == "tools/call":
            return self.required_for_tool(call.target)
        if call.method == "prompts/get":
            return self._prompts.get(call.target, frozenset())
        if call.method == "resources/read":
            return self.required_for_resource(call.target)
        return frozenset()

    def expand(self, granted: Iterable[str]) -> frozenset[str]:
        """Everything the granted scopes amount to, following the hierarchy transitively."""
        result = set(granted)
        pending = list(result)
        while pending:
            for implied in self._implies.get(pending.pop(), ()):
                if implied not in result:
                    result.add(implied)
                    pending.append(implied)
        return frozenset(result)

    def missing(self, granted: Iterable[str], required: Iterable[str]) -> frozenset[str]:
        required = frozenset(required)
        if not required:
            return required
        return required - self.expand(granted)
