"""``flask --app wsgi mcp tools``: what the configured providers register, checked before any client connects."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from flask.testing import FlaskCliRunner

from tests.support.issuer import MockIssuer
from tests.support.servers import BIN
from tests.support.servers import ROOT

EXAMPLES = "flask_mcp_examples:register"
EXAMPLES_LISTING = f"""\
Tools (6):
  whoami       any valid token  {EXAMPLES}
  greet_user   any valid token  {EXAMPLES}
  list_todos   todo:read        {EXAMPLES}
  add_todo     todo:write       {EXAMPLES}
  delete_todo  todo:delete      {EXAMPLES}
  count_to     any valid token  {EXAMPLES}
Resources (1):
  todo://{{id}}  todo:read        {EXAMPLES}
Prompts (1):
  plan_my_day  todo:read        {EXAMPLES}
Scope hierarchy (declared by the tools):
  todo:write implies todo:read
Scopes advertised in the metadata: todo:read todo:write
"""

REPORTS = """
from app.provider import ScopedServer

def register(server: ScopedServer) -> None:
    @server.tool(scopes=["reports:read"])
    def monthly_report() -> str:
        return ""
"""


def test_lists_every_primitive_with_its_scopes_and_provider(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["mcp", "tools"])
    assert result.exit_code == 0, result.output
    assert result.output == EXAMPLES_LISTING


def flask(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ["PATH"], **env}
    return subprocess.run(
        [str(BIN / "flask"), "--app", "wsgi", *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=60
    )


def production(issuer: MockIssuer, tmp_path: Path, **env: str) -> dict[str, str]:
    return {
        "MCP_RESOURCE_URL": "https://mcp.example.com/mcp",
        "MCP_ISSUER": issuer.issuer,
        "MCP_INSTANCE_PATH": str(tmp_path / "instance"),
        **env,
    }


def test_the_real_command_lists_a_providers_tools(issuer: MockIssuer, tmp_path: Path) -> None:
    (tmp_path / "reports_tools.py").write_text(REPORTS)
    env = production(
        issuer,
        tmp_path,
        PYTHONPATH=str(tmp_path),
        MCP_TOOLS="reports_tools:register",
        MCP_SCOPE_HIERARCHY="reports:admin=reports:read",
    )
    done = flask(["mcp", "tools"], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "Tools (1):\n"
        "  monthly_report  reports:read     reports_tools:register\n"
        "Resources (0):\n"
        "  none\n"
        "Prompts (0):\n"
        "  none\n"
        "Scope hierarchy (MCP_SCOPE_HIERARCHY):\n"
        "  reports:admin implies reports:read\n"
        "Scopes advertised in the metadata: none\n"
    )


def test_a_bad_provider_stops_the_command_with_one_line(issuer: MockIssuer, tmp_path: Path) -> None:
    done = flask(["mcp", "tools"], production(issuer, tmp_path, MCP_TOOLS="reports_tools:register"))
    assert done.returncode == 4
    assert done.stdout == ""
    assert done.stderr == (
        "configuration error: MCP_TOOLS: cannot import 'reports_tools:register': there is no module "
        "'reports_tools' (is its package installed in this virtualenv, or its folder on the Python path?)\n"
    )
