"""The MCP server itself: the SDK's ``MCPServer``, with a scope declaration beside each primitive.

Tools, resources and prompts are plain SDK ones, defined by tool providers
(:mod:`app.tool_providers`). :class:`ScopedServer` adds ``scopes=`` to the
decorators and records it in the :class:`ScopePolicy` that the authentication
hook consults before the SDK runs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from typing import Literal
from typing import TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.utilities.context_injection import find_context_parameter
from mcp.server.request_state import RequestStateSecurity
from mcp.shared.uri_template import UriTemplate

from app.auth.scopes import ScopePolicy
from app.settings import SettingsError
from app.settings import is_scope_token

F = TypeVar("F", bound=Callable[..., Any])

SERVER_NAME = "flask-mcp-server"


def in_request_thread(fn: F) -> F:
    """Let the SDK call a sync function directly instead of through a worker thread.

    The SDK runs sync tools with ``anyio.to_thread.run_sync`` so they cannot
    block a shared event loop. Our stateless bridge gives every request an event
    loop of its own, driven by the request's own WSGI thread: a sync tool can
    simply run there, as a Flask view would, and skip two thread switches.
    The wrapper keeps the signature (``__wrapped__``) the SDK builds the schema from.
    """
    if inspect.iscoroutinefunction(fn):
        return fn

    @functools.wraps(fn)
    async def run_inline(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return run_inline  # type: ignore[return-value]  # a coroutine function of the same signature, as the SDK wants


Kind = Literal["tool", "resource", "prompt"]
#: Scopes as a list, or as one space-separated string (the form OAuth itself uses, RFC 6749 section 3.3).
Scopes = str | Iterable[str]


def scope_set(scopes: Scopes) -> frozenset[str]:
    """The scopes as a set, each checked: a quote or space inside one would break every challenge naming it."""
    listed = scopes.split() if isinstance(scopes, str) else list(scopes)
    for scope in listed:
        if not isinstance(scope, str) or not is_scope_token(scope):
            raise SettingsError("MCP_TOOLS", f"{scope!r} is not a valid scope token (RFC 6749 section 3.3)")
    return frozenset(listed)


@dataclass(frozen=True)
class Registration:
    """One tool, resource (URI or template) or prompt, the scopes it requires and the provider that registered it."""

    kind: Kind
    name: str
    scopes: frozenset[str]
    provider: str
    function: Callable[..., Any]


class DuplicateRegistration(SettingsError):
    """Two registrations of one tool name, resource URI or prompt name: the SDK would keep the first silently."""

    def __init__(self, kind: str, name: str, first: str, second: str) -> None:
        by = f"twice by {first}" if first == second else f"by both {first} and {second}"
        super().__init__("MCP_TOOLS", f"{kind} {name!r} is registered {by}: MCP names must be unique")


class ScopedServer:
    """What a tool provider registers with: SDK tools, resources and prompts, each with the OAuth scopes it requires.

    The single place where primitives are registered, so the server knows for
    each one its scopes (for the authentication hook), the provider it came
    from (for ``flask mcp tools`` and error messages) and its function.
    """

    def __init__(
        self,
        mcp: MCPServer,
        policy: ScopePolicy,
        *,
        sync_in_request_thread: bool = True,
        instance_path: str,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.mcp = mcp
        self.policy = policy
        #: The instance folder: where a provider keeps its data (a SQLite file, a cache).
        self.instance_path = instance_path
        #: The variables the settings were read from (the process environment over ``.env``): read your
        #: own there, under a prefix of your own, and they work alike under flask run, gunicorn and uWSGI.
        self.env: Mapping[str, str] = MappingProxyType(dict(env or {}))
        self.registrations: list[Registration] = []
        self._inline = sync_in_request_thread
        self._provider = "-"
        self._instructions: list[str] = []
        self._development_scopes: list[str] = []

    @contextmanager
    def registering_for(self, provider: str) -> Iterator[None]:
        """Attribute what is registered inside the block to ``provider``."""
        previous, self._provider = self._provider, provider
        try:
            yield
        finally:
            self._provider = previous

    def _register(self, kind: Kind, name: str, scopes: frozenset[str], fn: F, add: Callable[[F], Any]) -> None:
        for earlier in self.registrations:
            if (earlier.kind, earlier.name) == (kind, name):
                raise DuplicateRegistration(kind, name, earlier.provider, self._provider)
        add(in_request_thread(fn) if self._inline else fn)
        self.registrations.append(Registration(kind, name, scopes, self._provider, fn))

    def answered_at_once(self) -> dict[str, frozenset[str]]:
        """Per JSON-RPC method, the names (or URIs) whose handler can send nothing but its answer.

        A sync function without a ``Context`` parameter cannot report progress, log to
        the client or ask it anything, and, run inline in the request's thread, it
        holds the event loop until it returns, so no keepalive could be sent either:
        its call is answered at once, whether through Server-Sent Events or not. The
        bridge then takes the SDK's JSON path for it. Resource templates are left
        out (a read names a URI, not the template). Stateful, nothing is listed.
        """
        if not self._inline:
            return {}
        methods = {"tool": "tools/call", "prompt": "prompts/get", "resource": "resources/read"}
        found: dict[str, set[str]] = {method: set() for method in methods.values()}
        for registration in self.registrations:
            fn = registration.function
            if inspect.iscoroutinefunction(fn) or find_context_parameter(fn) is not None:
                continue
            if registration.kind == "resource" and UriTemplate.is_template(registration.name):
                continue
            found[methods[registration.kind]].add(registration.name)
        return {method: frozenset(names) for method, names in found.items()}

    def required_scopes(self) -> list[str]:
        """Every scope some registered primitive requires, in the order they were first registered."""
        return list(dict.fromkeys(scope for r in self.registrations for scope in sorted(r.scopes)))

    def advertise_in_development(self, scopes: Scopes) -> None:
        """The scopes development mode advertises, so a client asks for them first (unless MCP_SCOPES_SUPPORTED is set).

        Without it, every scope a registered primitive requires; name fewer to
        have a client start narrow and step up.
        """
        ordered = scopes.split() if isinstance(scopes, str) else list(scopes)
        scope_set(ordered)
        self._development_scopes.extend(s for s in dict.fromkeys(ordered) if s not in self._development_scopes)

    def development_scopes(self) -> list[str]:
        return list(self._development_scopes) or self.required_scopes()

    def add_instructions(self, text: str) -> None:
        """Text for the server's ``instructions`` (sent at initialize and server/discover), after earlier providers'."""
        self._instructions.append(text.strip())
        # MCPServer takes instructions only when it is built, before any provider has run; the low-level
        # server reads this attribute on every initialize and server/discover (mcp 2.3).
        self.mcp._lowlevel_server.instructions = "\n\n".join(self._instructions)

    def describe_scopes(self, descriptions: Mapping[str, str]) -> None:
        """One line per scope saying what it lets a client do, for consent pages."""
        for scope, description in descriptions.items():
            self.policy.describe(scope, description)

    def imply_scopes(self, hierarchy: Mapping[str, Scopes]) -> None:
        """Broader scopes that imply narrower ones, e.g. ``{"notes:write": ["notes:read"]}``.

        MCP_SCOPE_HIERARCHY, when set, replaces everything the providers declare here.
        """
        for broad, narrow in hierarchy.items():
            if scope_set(broad) != {broad}:
                raise SettingsError("MCP_TOOLS", f"{broad!r} is not one valid scope token (RFC 6749 section 3.3)")
            self.policy.imply(broad, scope_set(narrow))

    def tool(self, *, scopes: Scopes = (), name: str | None = None, **options: Any) -> Callable[[F], F]:
        """Like ``MCPServer.tool()``; ``scopes`` are all required to call the tool."""
        return self._primitive("tool", name, scopes, self.mcp.tool(name=name, **options))

    def resource(self, uri: str, *, scopes: Scopes = (), **options: Any) -> Callable[[F], F]:
        """Like ``MCPServer.resource()``; ``scopes`` are all required to read it (templates included)."""
        return self._primitive("resource", uri, scopes, self.mcp.resource(uri, **options))

    def prompt(self, *, scopes: Scopes = (), name: str | None = None, **options: Any) -> Callable[[F], F]:
        """Like ``MCPServer.prompt()``; ``scopes`` are all required to get the prompt."""
        return self._primitive("prompt", name, scopes, self.mcp.prompt(name=name, **options))

    def _primitive(self, kind: Kind, name: str | None, scopes: Scopes, add: Callable[[F], Any]) -> Callable[[F], F]:
        """The decorator behind :meth:`tool`, :meth:`resource` and :meth:`prompt` (``name`` None: the function's)."""

        def decorator(fn: F) -> F:
            primitive_name, required = name or fn.__name__, scope_set(scopes)
            self._register(kind, primitive_name, required, fn, add)
            self._require(kind, primitive_name, required)
            return fn

        return decorator

    def _require(self, kind: Kind, name: str, scopes: frozenset[str]) -> None:
        if kind == "tool":
            self.policy.require_for_tool(name, scopes)
        elif kind == "prompt":
            self.policy.require_for_prompt(name, scopes)
        elif UriTemplate.is_template(name):
            self.policy.require_for_template(name, _matcher(UriTemplate.parse(name)), scopes)
        else:
            self.policy.require_for_resource(name, scopes)


def _matcher(template: UriTemplate) -> Callable[[str], bool]:
    """Whether the SDK serves a URI by ``template`` (a URI it cannot even split matches nothing)."""

    def matches(uri: str) -> bool:
        try:
            return template.match(uri) is not None
        except ValueError:
            return False

    return matches


def create_mcp_server(*, state_secret: str | None) -> MCPServer:
    """The SDK server; request state is sealed with the shared secret when there is one.

    With several worker processes a 2026-07-28 multi-round-trip retry can land
    on another worker, which must be able to open the state the first sealed.
    """
    security = RequestStateSecurity(keys=[state_secret]) if state_secret else None
    return MCPServer(SERVER_NAME, request_state_security=security)
