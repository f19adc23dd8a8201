"""Scopes: what each tool requires, and which granted scopes imply which.

MCP 2026-07-28 authorization, Scope Challenge Handling: "Servers MUST account
for scope hierarchies, where a broader scope implies narrower ones", and
"SHOULD include all scopes required for the current operation in a single
challenge".
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping


class ScopePolicy:
    """Scope requirements per MCP primitive, and the implication hierarchy."""

    def __init__(self, hierarchy: Mapping[str, Iterable[str]] | None = None) -> None:
        self._implies = {broad: frozenset(narrow) for broad, narrow in (hierarchy or {}).items()}
        self._tools: dict[str, frozenset[str]] = {}
        self._descriptions: dict[str, str] = {}

    def require_for_tool(self, name: str, scopes: Iterable[str]) -> None:
        self._tools[name] = frozenset(scopes)

    def describe(self, scope: str, description: str) -> None:
        """A one-line, user-facing description (a consent page shows it)."""
        self._descriptions[scope] = description

    def description(self, scope: str) -> str | None:
        return self._descriptions.get(scope)

    def known_scopes(self) -> list[str]:
        """Every scope a tool requires or the hierarchy names, sorted."""
        scopes = set(self._descriptions)
        for required in self._tools.values():
            scopes |= required
        for broad, narrow in self._implies.items():
            scopes |= {broad, *narrow}
        return sorted(scopes)

    def tool_requirements(self) -> dict[str, frozenset[str]]:
        return dict(self._tools)

    def required_for_tool(self, name: str) -> frozenset[str]:
        return self._tools.get(name, frozenset())

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
