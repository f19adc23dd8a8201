"""Debian's nginx, running a shipped site file (nginx/mcp-server.conf, or its stateful variant) for loopback ports.

Rendering replaces the example values of the shipped file and nothing else;
every replaced value must be found, so a change to the site file that the
tests would no longer exercise fails loudly instead of being skipped.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.servers import ROOT
from tests.support.servers import free_port
from tests.support.tls import TLSFiles

SITE_FILE = ROOT / "nginx" / "mcp-server.conf"
STATEFUL_SITE_FILE = ROOT / "nginx" / "mcp-server-stateful.conf"
# The stateful variant's example instances, as shipped: their map lines and their upstream blocks.
STATEFUL_MAP_LINES = '    "~^8000\\."      mcp_server_8000;\n    "~^8001\\."      mcp_server_8001;\n'
STATEFUL_UPSTREAMS = (
    "upstream mcp_server_8000 {\n    server 127.0.0.1:8000;\n    keepalive 16;\n}\n\n"
    "upstream mcp_server_8001 {\n    server 127.0.0.1:8001;\n    keepalive 16;\n}\n"
)
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def render_site(
    *,
    https_port: int,
    http_port: int,
    upstreams: Sequence[int],
    tls: TLSFiles,
    folder: Path,
    acme_root: Path,
    instances: Sequence[tuple[str, int]] | None = None,
) -> str:
    """``instances``: the stateful variant, with these (MCP_INSTANCE_NAME, port) pairs in its map and upstreams."""
    site_file = SITE_FILE if instances is None else STATEFUL_SITE_FILE
    text = site_file.read_text()
    servers = "\n    ".join(f"server 127.0.0.1:{port};" for port in upstreams)
    replacements = []
    if instances is not None:
        map_lines = "".join(f'    "~^{name}\\."      mcp_server_{name};\n' for name, _ in instances)
        blocks = "\n".join(
            f"upstream mcp_server_{name} {{\n    server 127.0.0.1:{port};\n    keepalive 16;\n}}\n"
            for name, port in instances
        )
        replacements += [(STATEFUL_MAP_LINES, map_lines), (STATEFUL_UPSTREAMS, blocks)]
    replacements += [
        ("/etc/letsencrypt/live/mcp.example.com/fullchain.pem", str(tls.fullchain)),
        ("/etc/letsencrypt/live/mcp.example.com/privkey.pem", str(tls.private_key)),
        ("server_name mcp.example.com;", "server_name 127.0.0.1;"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen [::]:80;", ""),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;"),
        ("listen [::]:443 ssl http2;", ""),
        ("server 127.0.0.1:8000;\n    server 127.0.0.1:8001;", servers),
        ("/var/www/certbot", str(acme_root)),
        ("/var/log/nginx/mcp-server.access.log", str(folder / "access.log")),
        ("/var/log/nginx/mcp-server.error.log", str(folder / "error.log")),
    ]
    for old, new in replacements:
        assert old in text, f"{old!r} is no longer in {site_file}: update tests/support/nginx.py"
        text = text.replace(old, new)
    directives = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in directives if "example.com" in line]
    return text


def main_config(folder: Path, site: Path) -> str:
    """The http{} context Debian's /etc/nginx/nginx.conf would provide, confined to ``folder``."""
    temp = {name: folder / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(exist_ok=True)
    # As root, nginx would run its workers as nobody, who cannot enter pytest's private folders.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} info;
events {{ worker_connections 512; }}
http {{
    default_type application/octet-stream;
    access_log {folder / "access.log"};
    client_body_temp_path {temp["client_body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {site};
}}
"""


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    folder: Path
    https_port: int
    http_port: int
    acme_root: Path

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def log(self) -> str:
        return "".join(
            (self.folder / name).read_text(errors="replace")
            for name in ("access.log", "error.log", "stderr.log")
            if (self.folder / name).exists()
        )

    def access_log(self) -> str:
        return (self.folder / "access.log").read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful shutdown
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def start_nginx(
    folder: Path,
    tls: TLSFiles,
    upstreams: Sequence[int],
    *,
    https_port: int | None = None,
    instances: Sequence[tuple[str, int]] | None = None,
) -> Nginx:
    """nginx in front of the instances on ``upstreams``; ready once /healthz answers through it.

    With ``instances``, the stateful variant routing each (name, port) instance's sessions to it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    https_port, http_port = https_port or free_port(), free_port()
    acme_root = folder / "acme"
    (acme_root / ".well-known" / "acme-challenge").mkdir(parents=True, exist_ok=True)
    site = folder / "mcp-server.conf"
    site.write_text(
        render_site(
            https_port=https_port,
            http_port=http_port,
            upstreams=upstreams,
            tls=tls,
            folder=folder,
            acme_root=acme_root,
            instances=instances,
        )
    )
    config = folder / "nginx.conf"
    config.write_text(main_config(folder, site))
    check = subprocess.run([NGINX, "-t", "-c", str(config), "-p", str(folder)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    with open(folder / "stderr.log", "wb") as stderr:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [NGINX, "-c", str(config), "-p", str(folder), "-g", "daemon off;"], stdout=stderr, stderr=stderr
        )
    nginx = Nginx(process, folder, https_port, http_port, acme_root)
    context = tls.client_context()
    deadline = time.monotonic() + 15
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited with {process.returncode}:\n{nginx.log()}")
        try:
            with urllib.request.urlopen(nginx.origin + "/healthz", timeout=2, context=context) as response:
                if response.status == 200:
                    return nginx
        except (urllib.error.URLError, OSError, ssl.SSLError):
            pass
        if time.monotonic() > deadline:
            nginx.stop()
            raise RuntimeError(f"nginx did not answer within 15 s:\n{nginx.log()}")
        time.sleep(0.1)
