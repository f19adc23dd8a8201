"""A misconfiguration stops the process with one clear line, under every way of starting it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.servers import BIN
from tests.support.servers import ROOT
from tests.support.servers import free_port

BAD_ENV = {"PATH": "/usr/bin:/bin", "MCP_RESOURCE_URL": "http://mcp.example.com/mcp", "MCP_ISSUER": "https://x"}
LINE = "configuration error: MCP_RESOURCE_URL: must use https (plain http is only allowed for loopback hosts): "
LINE += "'http://mcp.example.com/mcp'\n"


def test_import_prints_one_line_and_exits_4() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import wsgi"], cwd=ROOT, env=BAD_ENV, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 4
    assert done.stderr == LINE


def test_missing_issuer_names_the_variable() -> None:
    env = {"PATH": "/usr/bin:/bin", "MCP_RESOURCE_URL": "https://mcp.example.com/mcp"}
    done = subprocess.run(
        [sys.executable, "-c", "import wsgi"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 4
    assert done.stderr.startswith("configuration error: MCP_ISSUER: required")
    assert done.stderr.count("\n") == 1


@pytest.mark.e2e
def test_gunicorn_refuses_to_start_without_a_shared_state_secret() -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "MCP_RESOURCE_URL": "https://mcp.example.com/mcp",
        "MCP_ISSUER": "https://login.example.com",
    }
    args = [
        str(BIN / "gunicorn"),
        "-c",
        "gunicorn.conf.py",
        "--bind",
        f"127.0.0.1:{free_port()}",
        "-w",
        "3",
        "wsgi:app",
    ]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 4
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith(
        "configuration error: MCP_STATE_SECRET: required when 3 worker processes run: every worker must seal"
    )


@pytest.mark.e2e
def test_gunicorn_stops_on_a_provider_that_does_not_import(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Providers are imported in the workers (never in the master, which forks them): each says why, then the
    arbiter stops instead of restarting them forever."""
    env = {
        "PATH": "/usr/bin:/bin",
        "MCP_RESOURCE_URL": "https://mcp.example.com/mcp",
        "MCP_ISSUER": "https://login.example.com",
        "MCP_STATE_SECRET": "s" * 40,
        "MCP_INSTANCE_PATH": str(tmp_path),
        "MCP_TOOLS": "nowhere_tools:register",
        # One worker: when two fail to load at the same moment, gunicorn 27's arbiter reaps the second inside
        # its own halt and raises HaltServer out of it (exit 1 and a traceback of gunicorn's, about 1 start in
        # 8); the server still stops, after the same one-line reason.
        "MCP_WORKERS": "1",
    }
    args = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{free_port()}", "wsgi:app"]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 4
    assert "Traceback" not in done.stderr
    line = (
        "configuration error: MCP_TOOLS: cannot import 'nowhere_tools:register': there is no module "
        "'nowhere_tools' (is its package installed in this virtualenv, or its folder on the Python path?)"
    )
    assert line in done.stderr.splitlines(), done.stderr
