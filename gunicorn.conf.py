"""gunicorn configuration for the MCP server: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Every value can be overridden from the environment (the systemd unit reads
them from its EnvironmentFile) or on the command line.
"""

from __future__ import annotations

import os
import sys

from app import start_worker
from app import stop_worker
from app.settings import Settings
from app.settings import SettingsError

# Server socket
#
#   bind - Where to listen. 127.0.0.1 behind nginx on the same VM, or a unix
#          socket ("unix:/run/mcp-server/gunicorn.sock"). Never 0.0.0.0: the
#          app is meant to sit behind a TLS-terminating proxy.
#   backlog - Pending connections the kernel queues; 2048 is the default.
bind = os.environ.get("MCP_BIND", "127.0.0.1:8000")
backlog = int(os.environ.get("MCP_BACKLOG", "2048"))

# Worker processes
#
#   workers - Processes; one per core is right for this mostly CPU-bound app
#             (2-4 on a small VM). MCP_WORKERS.
#   worker_class - gthread: sync workers hold a whole process for a streaming
#             response and kill it at `timeout`; gthread serves other requests
#             from other threads while one streams.
#   threads - Requests in flight per worker, streams included. 4 to 8.
#   reuse_port - Each worker gets its own listening socket and the kernel
#             spreads connections across them; with one shared socket,
#             keep-alive connections tend to pile onto one worker.
#   timeout - Seconds of silence from a worker before the arbiter restarts it.
#             gthread workers heartbeat from their main loop, so long
#             streaming requests do not trip it.
#   graceful_timeout - On SIGTERM or SIGHUP, how long in-flight requests
#             (a streaming tool call) may take to finish.
#   keepalive - Seconds an idle keep-alive connection is held; nginx reuses
#             upstream connections, so longer than nginx's keepalive_timeout.
workers = int(os.environ.get("MCP_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("MCP_THREADS", "4"))
reuse_port = True
timeout = int(os.environ.get("MCP_WORKER_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("MCP_GRACEFUL_TIMEOUT", "60"))
keepalive = int(os.environ.get("MCP_KEEPALIVE", "75"))

# Security limits
#
#   limit_request_field_size - Real access tokens get large (Entra, Keycloak
#             with many roles); Authorization headers of 16 KiB and more must
#             pass. The default 8190 would answer 431 to them.
limit_request_field_size = 32768
limit_request_line = 8190

# Logging
#
#   accesslog - "-" is stderr (journald under systemd); "off" disables it.
#   access_log_format - Never the query string (a misbehaving client may put
#             a token there) and never the Authorization header: %(U)s is the
#             path alone.
accesslog = os.environ.get("MCP_ACCESS_LOG", "-")
if accesslog in ("", "off"):
    accesslog = None
errorlog = "-"
loglevel = os.environ.get("MCP_LOG_LEVEL", "info")
access_log_format = '%(h)s %(p)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'

# Process naming
proc_name = "mcp-server"


# Server hooks


def on_starting(server):  # type: ignore[no-untyped-def]
    """Validate the configuration once, in the master, with the real worker count."""
    try:
        Settings.from_env(workers=server.cfg.workers)
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        sys.exit(4)


def _loaded_app(worker):  # type: ignore[no-untyped-def]
    """The Flask app this worker serves: whatever module gunicorn was told to load (wsgi:app or your own)."""
    app = getattr(worker, "wsgi", None)
    return app if isinstance(getattr(app, "extensions", None), dict) and "mcp_bridge" in app.extensions else None


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    """Start the MCP bridge in this worker, after the fork (never in the master), and load the keys."""
    app = _loaded_app(worker)
    if app is not None:
        start_worker(app)


def worker_exit(server, worker):  # type: ignore[no-untyped-def]
    """Close this worker's event loops so their threads end and the process exits promptly."""
    app = _loaded_app(worker)
    if app is not None:
        stop_worker(app)
