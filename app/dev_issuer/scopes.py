"""The scopes the development authorization server offers, each with a one-line description.

What it offers: MCP_SCOPES_SUPPORTED (what the resource advertises; in
development mode the example tools' scopes unless set), then every other scope
a tool requires or the scope hierarchy names. So a client told to step up to
a scope the resource does not advertise up front can still get it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from app.auth.scopes import ScopePolicy


@dataclass(frozen=True)
class ScopeCatalogue:
    supported: tuple[str, ...]
    descriptions: dict[str, str]

    @classmethod
    def build(cls, advertised: Iterable[str], policy: ScopePolicy) -> ScopeCatalogue:
        supported = tuple(dict.fromkeys([*advertised, *policy.known_scopes()]))
        return cls(supported, {scope: policy.description(scope) or f"The scope {scope}" for scope in supported})

    def describe(self, scope: str) -> str:
        return self.descriptions.get(scope, f"The scope {scope}")
