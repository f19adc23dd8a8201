"""MCP_TOOLS: where the server's tools, resources and prompts come from.

A tool provider is a function that takes the :class:`~app.mcp_server.ScopedServer`
and registers on it (:mod:`app.provider` is what it imports). Which run:

1. MCP_TOOLS, when set: the providers it names, comma-separated, in that
   order, each an import path such as ``notes_mcp:register`` (imported with
   Werkzeug's ``import_string``). Nothing else runs: MCP_TOOLS wins.
2. Unset: every installed provider, that is every entry point of the group
   ``flask_mcp_server.tools`` (a package declares one in its pyproject:
   ``[project.entry-points."flask_mcp_server.tools"] notes = "notes_mcp:register"``),
   by name; so ``pip install`` of such a package is all it takes.
3. None installed: the example tools, ``flask_mcp_examples:register``, from the
   repository's ``examples/`` folder; so ``make run`` shows them.

Providers run once per process, at start. Everything that can go wrong there
(a path that does not import, a name that is not a function, a provider that
raises, two registering the same name) stops the server with one line naming
MCP_TOOLS; a provider that registers nothing, or a scope hierarchy naming
scopes that no primitive requires, is logged as a warning.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
import traceback
from collections.abc import Sequence
from dataclasses import replace
from importlib.metadata import EntryPoint
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import mcp
import pydantic
import werkzeug
from werkzeug.utils import ImportStringError
from werkzeug.utils import import_string

import app
from app.auth.scopes import ScopePolicy
from app.mcp_server import ScopedServer
from app.provider import Provider
from app.settings import Settings
from app.settings import SettingsError

logger = logging.getLogger(__name__)

_NOT_THE_PROVIDERS = tuple(
    os.path.dirname(module.__file__ or "") + os.sep for module in (app, mcp, pydantic, werkzeug, importlib)
)

ENTRY_POINT_GROUP = "flask_mcp_server.tools"
EXAMPLES = "flask_mcp_examples:register"
VARIABLE = "MCP_TOOLS"


def _error(problem: str) -> SettingsError:
    return SettingsError(VARIABLE, problem)


def _where(error: BaseException) -> str:
    """Where in the provider's own code an exception came from, so a one-line error still points at the line."""
    if isinstance(error, SyntaxError) and error.filename:
        return f" ({_short(error.filename)}:{error.lineno})"
    frames = traceback.extract_tb(error.__traceback__)
    # The deepest frame that is neither this server, the libraries it calls for the provider, nor the import system.
    own = [f for f in frames if not f.filename.startswith(_NOT_THE_PROVIDERS) and not f.filename.startswith("<")]
    candidates = own or frames
    frame = candidates[-1] if candidates else None
    return f" ({_short(frame.filename)}:{frame.lineno})" if frame is not None else ""


def _short(path: str) -> str:
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def _import_problem(path: str, cause: BaseException) -> str:
    if isinstance(cause, ModuleNotFoundError) and cause.name and path.replace(":", ".").startswith(cause.name):
        rest = path.replace(":", ".")[len(cause.name) :]
        if rest == "" or rest.startswith("."):
            return (
                f"cannot import {path!r}: there is no module {cause.name!r} (is its package installed in this "
                "virtualenv, or its folder on the Python path?)"
            )
    if isinstance(cause, AttributeError):
        return f"cannot import {path!r}: {cause}"
    if cause.args and isinstance(cause.args[0], AttributeError):
        return f"cannot import {path!r}: {cause.args[0]}"
    return f"importing {path!r} failed: {type(cause).__name__}: {cause}{_where(cause)}"


def load(path: str) -> Any:
    """What an import path names; any failure is one line naming MCP_TOOLS."""
    try:
        return import_string(path)
    except ImportStringError as error:
        raise _error(_import_problem(path, error.exception)) from None
    except Exception as error:
        # import_string lets everything but ImportError through: the module itself is broken.
        message = error.msg if isinstance(error, SyntaxError) else str(error)
        raise _error(f"importing {path!r} raised {type(error).__name__}: {message}{_where(error)}") from None


def _load_entry_point(entry_point: EntryPoint) -> tuple[str, Any]:
    label = f"{entry_point.name} ({entry_point.value})"
    try:
        return label, entry_point.load()
    except Exception as error:
        raise _error(
            f"the installed provider {label} does not load: {_import_problem(entry_point.value, error)}"
        ) from None


def installed() -> list[EntryPoint]:
    """The providers installed packages declare, by name."""
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda entry_point: entry_point.name)


def resolve(paths: Sequence[str]) -> list[tuple[str, Any]]:
    """The providers to run, each with the label messages and ``flask mcp tools`` know it by."""
    if paths:
        return [(path, load(path)) for path in paths]
    providers = installed()
    if providers:
        return [_load_entry_point(entry_point) for entry_point in providers]
    if importlib.util.find_spec(EXAMPLES.partition(":")[0]) is None:
        raise _error(
            "unset and no provider is installed, so the example tools would run, but they are not installed "
            "either (pip install -e ./examples); set MCP_TOOLS to your provider, e.g. notes_mcp:register"
        )
    return [(EXAMPLES, load(EXAMPLES))]


def _check_callable(label: str, provider: Any, server: ScopedServer) -> Provider:
    if isinstance(provider, ModuleType):
        raise _error(f"{label} is a module, not a function: name the function, as in {label}:register")
    if not callable(provider):
        raise _error(f"{label} is {type(provider).__name__!r}, not a function taking the server")
    try:
        signature = inspect.signature(provider)
    except (TypeError, ValueError):
        return provider  # type: ignore[no-any-return]  # a module attribute, checked callable above
    try:
        signature.bind(server)
    except TypeError:
        raise _error(f"{label} must take one argument, the server; its signature is {signature}") from None
    return provider  # type: ignore[no-any-return]  # a module attribute, checked callable above


def run(server: ScopedServer, label: str, provider: Any) -> None:
    """Run one provider; what it registers is attributed to ``label``."""
    provider = _check_callable(label, provider, server)
    before = len(server.registrations)
    with server.registering_for(label):
        try:
            provider(server)
        except SettingsError:
            raise
        except Exception as error:
            raise _error(f"{label} raised {type(error).__name__}: {error}{_where(error)}") from None
    if len(server.registrations) == before:
        logger.warning("%s: %s registered no tool, resource or prompt", VARIABLE, label)


def register_all(server: ScopedServer, paths: Sequence[str]) -> None:
    """Run every provider: MCP_TOOLS's, else the installed ones, else the examples."""
    for label, provider in resolve(paths):
        run(server, label, provider)


def register(server: ScopedServer, settings: Settings, provider: Provider | None = None) -> Settings:
    """Run the providers (``provider`` alone when given); the settings, completed with what they declared.

    The operator's MCP_SCOPE_HIERARCHY replaces the hierarchy the providers
    declared; without MCP_SCOPES_SUPPORTED, development mode advertises the
    scopes they ask for.
    """
    if provider is not None:
        run(server, f"{provider.__module__}:{provider.__qualname__}", provider)
    else:
        register_all(server, settings.tools)
    if settings.scope_hierarchy is not None:
        server.policy.replace_hierarchy(settings.scope_hierarchy)
    source = "MCP_SCOPE_HIERARCHY" if settings.scope_hierarchy is not None else "The tools' scope hierarchy"
    warn_about_unused_scopes(server.policy, server.required_scopes(), source)
    if settings.advertise_required_scopes:
        settings = replace(settings, scopes_supported=tuple(server.development_scopes()))
    return settings


def warn_about_unused_scopes(policy: ScopePolicy, required: Sequence[str], source: str) -> None:
    """Warn about implied scopes that lead to no scope any primitive requires: a typo, or left from other tools."""
    required_set = set(required)
    unused = sorted(
        {
            scope
            for narrow in policy.hierarchy().values()
            for scope in narrow
            if not policy.expand([scope]) & required_set
        }
    )
    if unused:
        logger.warning(
            "%s names scopes that no tool, resource or prompt requires: %s (a typo, or left from other tools?)",
            source,
            " ".join(unused),
        )
