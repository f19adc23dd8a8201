"""Debian's nginx as a token-adding reverse proxy, run unprivileged on a loopback port.

The conformance suite's client sends no token. nginx adds one to every request
and forwards everything else as a production proxy would: the Host header the
client sent (the server checks it against its resource URL, and the suite's
DNS-rebinding probe sends a foreign one), HTTP/1.1 upstream, no buffering, so
Server-Sent Events stream live, and a long read timeout for streams that stay
quiet. Each request opens its own upstream connection (no upstream
keep-alive), so the kernel spreads them over gunicorn's workers.

nginx gets a prefix folder of its own (configuration, pid file, logs and
temporary files), runs in the foreground, and is stopped by its process id.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
from pathlib import Path

from tests.support.servers import ServerProcess
from tests.support.servers import free_port

NGINX = "/usr/sbin/nginx"

CONFIG = """\
{user}worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;

events {{
    worker_connections 512;
}}

http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;

    server {{
        listen 127.0.0.1:{port};

        location = /nginx-ready {{
            return 200 "ready";
        }}

        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Authorization "Bearer {token}";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
    }}
}}
"""


def nginx_available() -> bool:
    return shutil.which(NGINX) is not None or Path(NGINX).is_file()


def start_token_proxy(upstream_port: int, token: str, folder: Path, *, port: int | None = None) -> ServerProcess:
    """nginx on ``127.0.0.1:port`` in front of ``127.0.0.1:upstream_port``, adding ``token`` to every request."""
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    # As root (CI), nginx would hand its workers to "nobody", who cannot use
    # these temporary folders: keep them under the current user.
    user = ""
    if os.geteuid() == 0:
        user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(0).gr_name};\n"
    config = folder / "nginx.conf"
    config.write_text(
        CONFIG.format(user=user, prefix=folder, port=port, upstream_port=upstream_port, token=token),
        encoding="utf-8",
    )
    config.chmod(0o600)  # it holds a token
    args = [NGINX, "-p", str(folder), "-c", str(config), "-e", str(folder / "error.log"), "-g", "daemon off;"]
    return ServerProcess(args, {}, folder / "nginx.out", f"http://127.0.0.1:{port}/nginx-ready")
