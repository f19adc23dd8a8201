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
