"""The shipped systemd units: systemd-analyze accepts them, they are hardened, and gunicorn speaks systemd.

This machine runs no systemd as PID 1, so the units are checked offline with
Debian's systemd-analyze, and what the units rely on gunicorn for (READY=1 on
NOTIFY_SOCKET for Type=notify, the socket handed over by socket activation) is
checked with the real gunicorn and systemd-socket-activate.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import httpx2
import pytest

from tests.deploy.conftest import app_env
from tests.deploy.conftest import assert_no_token
from tests.support.issuer import MockIssuer
from tests.support.jsonrpc import request_body
from tests.support.jsonrpc import request_headers
from tests.support.jsonrpc import result_of
from tests.support.servers import BIN
from tests.support.servers import ROOT
from tests.support.servers import ServerProcess
from tests.support.servers import free_port
from tests.support.servers import start_gunicorn

pytestmark = pytest.mark.e2e

UNITS = ROOT / "systemd"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
SOCKET_ACTIVATE = shutil.which("systemd-socket-activate") or "/usr/bin/systemd-socket-activate"
INSTALL_DIR = "/opt/mcp-server"
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "ReadWritePaths": "/var/lib/mcp-server",
}
# The exposure score of `systemd-analyze security` (0 is the most locked down, 10 the least);
# the README reports the measured value.
MAX_EXPOSURE = 1.5


def directives(path: Path) -> dict[str, list[str]]:
    """The [Service] section's directives, every value of a repeated one in order."""
    found: dict[str, list[str]] = {}
    section = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The units as installed from this checkout: /opt/mcp-server is where this code is."""
    folder = tmp_path_factory.mktemp("units")
    for unit in UNITS.iterdir():
        text = unit.read_text()
        assert INSTALL_DIR in text or unit.suffix == ".socket", unit
        (folder / unit.name).write_text(text.replace(INSTALL_DIR, str(ROOT)))
    return folder


@pytest.mark.parametrize("unit", ["mcp-server.service", "mcp-server.socket", "mcp-server@8000.service"])
def test_systemd_analyze_verify_accepts_the_unit(installed: Path, unit: str) -> None:
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(installed / unit)], capture_output=True, text=True, timeout=60
    )
    # verify only warns about an unknown or misspelt directive: any output at all is a failure.
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_the_shipped_units_are_the_ones_tested() -> None:
    assert sorted(unit.name for unit in UNITS.iterdir()) == [
        "mcp-server.service",
        "mcp-server.socket",
        "mcp-server@.service",
    ]


@pytest.mark.parametrize("unit", ["mcp-server.service", "mcp-server@.service"])
def test_services_are_hardened_and_notify(unit: str) -> None:
    found = directives(UNITS / unit)
    for key, value in HARDENING.items():
        assert found.get(key) == [value], key
    assert found["Type"] == ["notify"]
    assert found["User"] == ["mcp-server"]
    assert found["EnvironmentFile"] == ["/etc/mcp-server/env"]
    assert found["Restart"] == ["on-failure"]
    assert found["RestartPreventExitStatus"] == ["4"]
    # Longer than gunicorn's graceful timeout (60 s), so a streaming call can finish on stop.
    assert int(found["TimeoutStopSec"][0]) > 60
    assert not any("SECRET" in value or "TOKEN" in value for values in found.values() for value in values)


def test_the_template_binds_its_instance_port() -> None:
    found = directives(UNITS / "mcp-server@.service")
    assert found["ExecStart"][0].endswith(" --bind 127.0.0.1:%i wsgi:app")
    assert found["Environment"] == [
        "MCP_INSTANCE_PATH=/var/lib/mcp-server",
        "PROMETHEUS_MULTIPROC_DIR=/run/mcp-server-%i/metrics",
        "MCP_PROC_NAME=mcp-server-%i",
        "MCP_INSTANCE_NAME=%i",
    ]
    assert found["RuntimeDirectory"] == ["mcp-server-%i"]


@pytest.mark.parametrize("unit", ["mcp-server.service", "mcp-server@8000.service"])
def test_security_exposure_score(installed: Path, unit: str) -> None:
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(installed / unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", done.stdout)
    assert match is not None, done.stdout + done.stderr
    print(f"systemd-analyze security {unit}: {match.group(1)} {match.group(2)}")
    assert float(match.group(1)) <= MAX_EXPOSURE, done.stdout


def test_gunicorn_tells_systemd_it_is_ready(issuer: MockIssuer, tmp_path: Path) -> None:
    """Type=notify: the arbiter sends READY=1 to NOTIFY_SOCKET once it is up."""
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(address)
        notify.settimeout(30)
        env = app_env(issuer, "http://127.0.0.1:8000/mcp", tmp_path, NOTIFY_SOCKET=address)
        process, _ = start_gunicorn(env, tmp_path / "gunicorn.log", workers=1, threads=2)
        try:
            message = notify.recv(4096).decode()
        finally:
            assert process.stop() == 0, process.log()
    assert message.split("\n")[0] == "READY=1"
    assert_no_token(process.log())


def test_socket_activation_serves_on_the_socket_systemd_hands_over(issuer: MockIssuer, tmp_path: Path) -> None:
    """mcp-server.socket: gunicorn takes the listening socket (LISTEN_FDS) instead of binding its own."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = app_env(issuer, base + "/mcp", tmp_path, MCP_WORKERS="2", PATH="/usr/bin:/bin")
    forwarded = [option for name in env for option in ("-E", name)]
    args = [
        SOCKET_ACTIVATE,
        "-l",
        f"127.0.0.1:{port}",
        *forwarded,
        str(BIN / "gunicorn"),
        "-c",
        str(ROOT / "gunicorn.conf.py"),
        "wsgi:app",
    ]
    process = ServerProcess(args, env, tmp_path / "activated.log", base + "/readyz")
    try:
        token = issuer.mint(base + "/mcp")
        answers = [
            httpx2.post(
                base + "/mcp", headers=request_headers("tools/list", token=token), json=request_body("tools/list")
            )
            for _ in range(6)
        ]
    finally:
        code = process.stop()
    log = process.log()
    assert code == 0, log
    assert [answer.status_code for answer in answers] == [200] * 6
    assert len(result_of(answers[0].headers["content-type"], answers[0].content)["result"]["tools"]) == 6
    assert f"Listening at: {base} " in log
    assert "127.0.0.1:8000" not in log  # MCP_BIND's default was not bound beside the handed-over socket
    assert len(set(re.findall(r"Booting worker with pid: (\d+)", log))) == 2
    assert "Control socket" not in log  # off unless MCP_CONTROL_SOCKET names one
    assert_no_token(log)
