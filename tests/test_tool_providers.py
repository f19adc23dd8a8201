"""MCP_TOOLS: which providers run, and every way a provider can be wrong, each a one-line error or a warning.

Provider modules are written to a folder put on ``sys.path``; an "installed"
provider is a ``.dist-info`` folder with an ``entry_points.txt`` beside them,
which is all importlib.metadata looks for (tests/e2e/test_provider_package.py
installs a real package with pip).
"""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from app import create_app
from app import stop_worker
from app import tool_providers
from app.mcp_server import ScopedServer
from app.settings import Settings
from app.settings import SettingsError
from tests.conftest import RESOURCE
from tests.e2e.test_sdk_client import ALL_TOOLS
from tests.support.issuer import MockIssuer

PROVIDER_LOGGER = "app.tool_providers"

NOTES = """
from app.provider import ScopedServer

def register(server: ScopedServer) -> None:
    server.add_instructions("Notes.")

    @server.tool(scopes=["notes:read"])
    def read_notes() -> str:
        return "notes"
"""

WEATHER = """
from app.provider import ScopedServer

def register(server: ScopedServer) -> None:
    server.add_instructions("Weather.")

    @server.tool()
    def forecast() -> str:
        return "sunny"
"""


class Folder:
    """A folder on sys.path where the tests write provider modules and fake installed distributions."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def module(self, name: str, source: str) -> Path:
        file = self.path / f"{name}.py"
        file.write_text(textwrap.dedent(source).lstrip())
        return file

    def installed(self, distribution: str, **entry_points: str) -> None:
        info = self.path / f"{distribution}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
        lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
        (info / "entry_points.txt").write_text(f"[{tool_providers.ENTRY_POINT_GROUP}]\n{lines}")


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Folder]:
    path = tmp_path / "site"
    path.mkdir()
    before = set(sys.modules)
    monkeypatch.syspath_prepend(str(path))
    yield Folder(path)
    for name in set(sys.modules) - before:
        if getattr(sys.modules[name], "__file__", None) and str(path) in str(sys.modules[name].__file__):
            del sys.modules[name]


@pytest.fixture
def build(issuer: MockIssuer, tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """create_app with production settings plus the given variables; every app built is stopped afterwards."""
    built: list[Flask] = []

    def build_app(**env: str) -> Flask:
        settings = Settings.from_mapping(
            {"MCP_RESOURCE_URL": RESOURCE, "MCP_ISSUER": issuer.issuer, "MCP_INSTANCE_PATH": str(tmp_path), **env}
        )
        app = create_app(settings)
        built.append(app)
        return app

    yield build_app
    for app in built:
        stop_worker(app)


def refusal(build: Callable[..., Flask], **env: str) -> str:
    with pytest.raises(SettingsError) as caught:
        build(**env)
    assert caught.value.variable == "MCP_TOOLS"
    message = str(caught.value)
    assert "\n" not in message
    return message


def registered(app: Flask) -> list[tuple[str, str, str]]:
    tools: ScopedServer = app.extensions["mcp_tools"]
    return [(r.kind, r.name, r.provider) for r in tools.registrations]


def instructions(app: Flask) -> str | None:
    return app.extensions["mcp_bridge"].server.instructions  # type: ignore[no-any-return]


class TestWhichProvidersRun:
    def test_mcp_tools_names_them_in_order(self, folder: Folder, build: Callable[..., Flask]) -> None:
        folder.module("notes_tools", NOTES)
        folder.module("weather_tools", WEATHER)
        app = build(MCP_TOOLS="weather_tools:register, notes_tools:register")
        assert registered(app) == [
            ("tool", "forecast", "weather_tools:register"),
            ("tool", "read_notes", "notes_tools:register"),
        ]
        assert instructions(app) == "Weather.\n\nNotes."

    def test_a_dotted_path_works_too(self, folder: Folder, build: Callable[..., Flask]) -> None:
        folder.module("notes_tools", NOTES)
        assert registered(build(MCP_TOOLS="notes_tools.register")) == [("tool", "read_notes", "notes_tools.register")]

    def test_unset_runs_every_installed_provider_by_name(self, folder: Folder, build: Callable[..., Flask]) -> None:
        folder.module("notes_tools", NOTES)
        folder.module("weather_tools", WEATHER)
        folder.installed("zeta-weather", weather="weather_tools:register")
        folder.installed("acme-notes", notes="notes_tools:register")
        assert registered(build()) == [
            ("tool", "read_notes", "notes (notes_tools:register)"),
            ("tool", "forecast", "weather (weather_tools:register)"),
        ]

    def test_mcp_tools_wins_over_installed_providers(self, folder: Folder, build: Callable[..., Flask]) -> None:
        folder.module("notes_tools", NOTES)
        folder.module("weather_tools", WEATHER)
        folder.installed("acme-notes", notes="notes_tools:register")
        assert registered(build(MCP_TOOLS="weather_tools:register")) == [("tool", "forecast", "weather_tools:register")]

    def test_with_none_installed_the_examples_run(self, build: Callable[..., Flask]) -> None:
        app = build()
        assert {provider for _, _, provider in registered(app)} == {"flask_mcp_examples:register"}
        assert [name for kind, name, _ in registered(app) if kind == "tool"] == ALL_TOOLS
        assert instructions(app) == (
            "Tools of a small todo list that belongs to the signed-in user, plus whoami, greet_user "
            "and count_to (which reports progress while it counts)."
        )

    def test_the_examples_can_run_beside_your_own(self, folder: Folder, build: Callable[..., Flask]) -> None:
        folder.module("notes_tools", NOTES)
        app = build(MCP_TOOLS="notes_tools:register,flask_mcp_examples:register")
        assert registered(app)[0] == ("tool", "read_notes", "notes_tools:register")
        assert ("resource", "todo://{id}", "flask_mcp_examples:register") in registered(app)

    def test_register_tools_replaces_them(self, settings: Settings) -> None:
        def only_this(server: ScopedServer) -> None:
            @server.tool()
            def ping() -> str:
                return "pong"

        app = create_app(settings, register_tools=only_this)
        label = "tests.test_tool_providers:TestWhichProvidersRun.test_register_tools_replaces_them.<locals>.only_this"
        assert registered(app) == [("tool", "ping", label)]
        stop_worker(app)


class TestRefusals:
    @pytest.mark.parametrize(
        ("source", "value", "problem"),
        [
            pytest.param(
                None,
                "nowhere_tools:register",
                "cannot import 'nowhere_tools:register': there is no module 'nowhere_tools' (is its package "
                "installed in this virtualenv, or its folder on the Python path?)",
                id="no-such-module",
            ),
            pytest.param(
                None,
                "app.notes.sub:register",
                "cannot import 'app.notes.sub:register': there is no module 'app.notes' (is its "
                "package installed in this virtualenv, or its folder on the Python path?)",
                id="no-such-submodule",
            ),
            pytest.param(
                "import requests_that_are_not_installed\n",
                "broken_tools:register",
                "importing 'broken_tools:register' failed: ModuleNotFoundError: No module named "
                "'requests_that_are_not_installed' ({file}:1)",
                id="a-dependency-is-missing",
            ),
            pytest.param(
                "def register(server)\n    pass\n",
                "broken_tools:register",
                "importing 'broken_tools:register' raised SyntaxError: expected ':' ({file}:1)",
                id="syntax-error",
            ),
            pytest.param(
                "X = 1\nraise RuntimeError('no database configured')\n",
                "broken_tools:register",
                "importing 'broken_tools:register' raised RuntimeError: no database configured ({file}:2)",
                id="raises-when-imported",
            ),
            pytest.param(
                "def register(server):\n    pass\n",
                "broken_tools:regster",
                "cannot import 'broken_tools:regster': module 'broken_tools' has no attribute 'regster'",
                id="missing-attribute",
            ),
            pytest.param(
                "TOOLS = ['read_notes']\n",
                "broken_tools:TOOLS",
                "broken_tools:TOOLS is 'list', not a function taking the server",
                id="not-callable",
            ),
            pytest.param(
                "def register(server):\n    pass\n",
                "broken_tools",
                "broken_tools is a module, not a function: name the function, as in broken_tools:register",
                id="a-module",
            ),
            pytest.param(
                "def register(server, database):\n    pass\n",
                "broken_tools:register",
                "broken_tools:register must take one argument, the server; its signature is (server, database)",
                id="old-signature",
            ),
            pytest.param(
                "def register(server):\n    raise KeyError('NOTES_DATABASE')\n",
                "broken_tools:register",
                "broken_tools:register raised KeyError: 'NOTES_DATABASE' ({file}:2)",
                id="provider-raises",
            ),
            pytest.param(
                "def register(server):\n"
                "    @server.resource('note://{id}')\n"
                "    def note(name: str) -> str:\n"
                "        return name\n",
                "broken_tools:register",
                "broken_tools:register raised ValueError: Mismatch between URI parameters {{'id'}} and function "
                "parameters {{'name'}} ({file}:2)",
                id="the-sdk-refuses-a-definition",
            ),
            pytest.param(
                "def register(server):\n    @server.tool(scopes=['notes:read', 'a\"b'])\n    def t() -> str:\n"
                "        return ''\n",
                "broken_tools:register",
                "'a\"b' is not a valid scope token (RFC 6749 section 3.3)",
                id="bad-scope",
            ),
        ],
    )
    def test_one_line_naming_mcp_tools(
        self, folder: Folder, build: Callable[..., Flask], source: str | None, value: str, problem: str
    ) -> None:
        file = folder.module("broken_tools", source) if source is not None else None
        expected = "MCP_TOOLS: " + problem.format(file=file)
        assert refusal(build, MCP_TOOLS=value) == expected

    @pytest.mark.parametrize(
        ("first", "second", "problem"),
        [
            pytest.param(
                "@server.tool()\ndef forecast() -> str:\n    return ''\n",
                "@server.tool(scopes=['x'])\ndef forecast() -> str:\n    return ''\n",
                "tool 'forecast' is registered by both a_tools:register and b_tools:register",
                id="tool",
            ),
            pytest.param(
                "@server.tool(name='forecast')\ndef f() -> str:\n    return ''\n",
                "@server.tool()\ndef forecast() -> str:\n    return ''\n",
                "tool 'forecast' is registered by both a_tools:register and b_tools:register",
                id="tool-by-explicit-name",
            ),
            pytest.param(
                "@server.resource('note://{id}')\ndef a(id: int) -> str:\n    return ''\n",
                "@server.resource('note://{id}')\ndef b(id: int) -> str:\n    return ''\n",
                "resource 'note://{id}' is registered by both a_tools:register and b_tools:register",
                id="resource",
            ),
            pytest.param(
                "@server.prompt()\ndef plan() -> str:\n    return ''\n",
                "@server.prompt()\ndef plan() -> str:\n    return ''\n",
                "prompt 'plan' is registered by both a_tools:register and b_tools:register",
                id="prompt",
            ),
        ],
    )
    def test_two_providers_registering_one_name(
        self, folder: Folder, build: Callable[..., Flask], first: str, second: str, problem: str
    ) -> None:
        for name, body in (("a_tools", first), ("b_tools", second)):
            folder.module(name, "def register(server):\n" + textwrap.indent(body, "    "))
        expected = f"MCP_TOOLS: {problem}: MCP names must be unique"
        assert refusal(build, MCP_TOOLS="a_tools:register,b_tools:register") == expected

    def test_one_provider_registering_a_name_twice(self, folder: Folder, build: Callable[..., Flask]) -> None:
        folder.module(
            "a_tools",
            """
            def register(server):
                for _ in range(2):
                    @server.tool()
                    def forecast() -> str:
                        return ""
            """,
        )
        assert refusal(build, MCP_TOOLS="a_tools:register") == (
            "MCP_TOOLS: tool 'forecast' is registered twice by a_tools:register: MCP names must be unique"
        )

    def test_an_installed_provider_that_does_not_load(self, folder: Folder, build: Callable[..., Flask]) -> None:
        folder.installed("acme-notes", notes="acme_notes_gone:register")
        assert refusal(build) == (
            "MCP_TOOLS: the installed provider notes (acme_notes_gone:register) does not load: cannot import "
            "'acme_notes_gone:register': there is no module 'acme_notes_gone' (is its package installed in this "
            "virtualenv, or its folder on the Python path?)"
        )

    def test_the_examples_missing_too(self, build: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(tool_providers, "EXAMPLES", "flask_mcp_examples_not_installed:register")
        assert refusal(build) == (
            "MCP_TOOLS: unset and no provider is installed, so the example tools would run, but they are not "
            "installed either (pip install -e ./examples); set MCP_TOOLS to your provider, e.g. notes_mcp:register"
        )


class TestWarnings:
    def test_a_provider_that_registers_nothing(
        self, folder: Folder, build: Callable[..., Flask], caplog: pytest.LogCaptureFixture
    ) -> None:
        folder.module("empty_tools", "def register(server):\n    server.add_instructions('Nothing yet.')\n")
        folder.module("notes_tools", NOTES)
        with caplog.at_level(logging.WARNING, logger=PROVIDER_LOGGER):
            build(MCP_TOOLS="empty_tools:register,notes_tools:register")
        assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == PROVIDER_LOGGER] == [
            ("WARNING", "MCP_TOOLS: empty_tools:register registered no tool, resource or prompt")
        ]

    def test_mcp_scope_hierarchy_naming_scopes_nothing_requires(
        self, folder: Folder, build: Callable[..., Flask], caplog: pytest.LogCaptureFixture
    ) -> None:
        folder.module("notes_tools", NOTES)
        with caplog.at_level(logging.WARNING, logger=PROVIDER_LOGGER):
            app = build(
                MCP_TOOLS="notes_tools:register",
                MCP_SCOPE_HIERARCHY="todo:write=todo:read; notes:admin=notes:read notes:raed",
            )
        assert [r.getMessage() for r in caplog.records if r.name == PROVIDER_LOGGER] == [
            "MCP_SCOPE_HIERARCHY names scopes that no tool, resource or prompt requires: notes:raed todo:read "
            "(a typo, or left from other tools?)"
        ]
        # A warning, not a refusal: the hierarchy is in force as written.
        assert app.extensions["mcp_tools"].policy.expand(["notes:admin"]) == {"notes:admin", "notes:read", "notes:raed"}

    def test_a_declared_hierarchy_naming_scopes_nothing_requires(
        self, folder: Folder, build: Callable[..., Flask], caplog: pytest.LogCaptureFixture
    ) -> None:
        folder.module(
            "notes_tools",
            NOTES + "    server.imply_scopes({'notes:write': 'notes:read notes:list'})\n",
        )
        with caplog.at_level(logging.WARNING, logger=PROVIDER_LOGGER):
            build(MCP_TOOLS="notes_tools:register")
        assert [r.getMessage() for r in caplog.records if r.name == PROVIDER_LOGGER] == [
            "The tools' scope hierarchy names scopes that no tool, resource or prompt requires: notes:list "
            "(a typo, or left from other tools?)"
        ]

    def test_the_examples_start_without_a_warning(
        self, build: Callable[..., Flask], caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING, logger=PROVIDER_LOGGER):
            build()
        assert [r for r in caplog.records if r.name == PROVIDER_LOGGER] == []


class TestScopesTheProvidersDeclare:
    def test_the_declared_hierarchy_applies(self, build: Callable[..., Flask]) -> None:
        policy = build().extensions["mcp_tools"].policy
        assert policy.hierarchy() == {"todo:write": frozenset({"todo:read"})}

    @pytest.mark.parametrize(
        ("value", "hierarchy"),
        [
            pytest.param("todo:admin=todo:delete", {"todo:admin": frozenset({"todo:delete"})}, id="replaced"),
            pytest.param("", {}, id="emptied"),
        ],
    )
    def test_mcp_scope_hierarchy_replaces_it(
        self, build: Callable[..., Flask], value: str, hierarchy: dict[str, frozenset[str]]
    ) -> None:
        assert build(MCP_SCOPE_HIERARCHY=value).extensions["mcp_tools"].policy.hierarchy() == hierarchy

    def test_development_mode_advertises_the_declared_scopes(self, tmp_path: Path) -> None:
        app = create_app(Settings.from_mapping({"MCP_DEV": "1", "MCP_INSTANCE_PATH": str(tmp_path)}))
        document = app.test_client().get("http://127.0.0.1:5000/.well-known/oauth-protected-resource/mcp").get_json()
        assert document["scopes_supported"] == ["todo:read", "todo:write", "todo:delete"]
        stop_worker(app)

    def test_without_a_declaration_every_required_scope(self, folder: Folder, tmp_path: Path) -> None:
        folder.module(
            "notes_tools",
            NOTES + "    @server.prompt(scopes='notes:write notes:read')\n    def p() -> str:\n        return ''\n",
        )
        env = {"MCP_DEV": "1", "MCP_INSTANCE_PATH": str(tmp_path), "MCP_TOOLS": "notes_tools:register"}
        app = create_app(Settings.from_mapping(env))
        assert app.extensions["mcp_settings"].scopes_supported == ("notes:read", "notes:write")
        response = app.test_client().post("http://127.0.0.1:5000/mcp")
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == (
            'Bearer scope="notes:read notes:write", '
            'resource_metadata="http://127.0.0.1:5000/.well-known/oauth-protected-resource/mcp"'
        )
        stop_worker(app)
