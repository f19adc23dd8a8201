"""gunicorn configuration for the MCP server: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Every value can be overridden from the environment (the systemd unit reads
them from its EnvironmentFile) or on the command line.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile

# Metrics
#
#   PROMETHEUS_MULTIPROC_DIR - Where every worker writes its metric samples, so
#             that a scrape of any worker reports them all. It must be in the
#             environment before prometheus_client is imported (by the app
#             import below), so this file sets it. The systemd units point it
#             into their RuntimeDirectory; otherwise a private temporary folder
#             is made and removed on exit. One folder per gunicorn instance:
#             it is emptied when the instance starts.
_TEMPORARY_METRICS_PREFIX = os.path.join(tempfile.gettempdir(), "mcp-server-metrics-")
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=os.path.basename(_TEMPORARY_METRICS_PREFIX))
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], mode=0o700, exist_ok=True)

from prometheus_client import multiprocess  # noqa: E402 (after PROMETHEUS_MULTIPROC_DIR)

from app import start_worker  # noqa: E402
from app import stop_worker  # noqa: E402
from app.settings import WORKERS_VARIABLE  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.settings import SettingsError  # noqa: E402
from app.settings import worker_count  # noqa: E402
from app.urls import is_loopback_host  # noqa: E402

# Server socket
#
#   bind - Where to listen. 127.0.0.1 behind nginx on the same VM, or a unix
#          socket ("unix:/run/mcp-server/gunicorn.sock"). Never 0.0.0.0: the
#          app is meant to sit behind a TLS-terminating proxy. MCP_BIND.
#          Under systemd socket activation (mcp-server.socket) the socket comes
#          from systemd and this is ignored.
#   backlog - Pending connections the kernel queues; 2048 is the default.
#   forwarded_allow_ips - Peers whose X-Forwarded-Proto gunicorn believes
#          (for wsgi.url_scheme). Only the local proxy: nginx on this VM.
#          The app itself believes X-Forwarded-* only through ProxyFix, for
#          MCP_TRUSTED_PROXIES hops. MCP_FORWARDED_ALLOW_IPS.
bind = os.environ.get("MCP_BIND", "127.0.0.1:8000")
backlog = int(os.environ.get("MCP_BACKLOG", "2048"))
forwarded_allow_ips = os.environ.get("MCP_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# Worker processes
#
#   workers - Processes; one per core is right for this mostly CPU-bound app
#             (2-4 on a small VM). MCP_WORKERS, read as Settings reads it
#             (default 2); the workers then read the count gunicorn runs
#             (on_starting writes it back, a -w on the command line included).
#   worker_class - app.serving.worker.ConnectionWorker: one thread at a time
#             polls every connection and serves each request start to end, like
#             an event loop; a request that must wait (a tool awaiting I/O, a
#             stream between events) goes on in a thread of its own while
#             another thread takes over the polling. Measured against gthread
#             and the SDK's native server in the README (Performance).
#             MCP_WORKER_CLASS=gthread brings gunicorn's own threaded worker
#             back (then `threads` applies).
#   worker_connections - Connections per worker, and so the most threads it
#             makes (open streams and waiting requests each hold one; nginx's
#             idle kept-alive upstream connections only a poller entry).
#             Beyond it new connections wait in the listen backlog.
#             MCP_WORKER_CONNECTIONS.
#   threads - gthread only: requests in flight per worker. MCP_THREADS.
#   reuse_port - Each worker gets its own listening socket and the kernel
#             spreads connections across them; with one shared socket,
#             keep-alive connections tend to pile onto one worker. The price:
#             when a worker stops (reload, SIGHUP) or dies, connections still
#             queued on its socket are reset, unless the kernel moves them to
#             a sibling socket: set the sysctl net.ipv4.tcp_migrate_req=1
#             (Linux 5.14+, docs/deploy.md), or MCP_REUSE_PORT=0 for one
#             shared socket. Off under socket activation: gunicorn 27 would
#             then bind its own sockets beside systemd's instead of using the
#             one it was handed.
#   timeout - Seconds of silence from a worker before the arbiter restarts it.
#             Both the connection worker and gthread heartbeat from their main
#             thread, so long streaming requests do not trip it.
#             MCP_WORKER_TIMEOUT.
#   graceful_timeout - On SIGTERM or SIGHUP, how long in-flight requests
#             (a streaming tool call) may take to finish before the worker is
#             killed. Longer than your slowest tool; the systemd unit's
#             TimeoutStopSec must be longer still. MCP_GRACEFUL_TIMEOUT.
#   keepalive - Seconds an idle keep-alive connection is held; nginx reuses
#             upstream connections, so longer than nginx's keepalive_timeout.
_socket_activated = os.environ.get("LISTEN_PID") == str(os.getpid()) and int(os.environ.get("LISTEN_FDS", "0")) > 0
try:
    workers = worker_count(os.environ)
except SettingsError as error:
    print(f"configuration error: {error}", file=sys.stderr)
    sys.exit(4)
worker_class = os.environ.get("MCP_WORKER_CLASS", "app.serving.worker.ConnectionWorker")
worker_connections = int(os.environ.get("MCP_WORKER_CONNECTIONS", "256"))
threads = int(os.environ.get("MCP_THREADS", "4"))
reuse_port = os.environ.get("MCP_REUSE_PORT", "1") != "0" and not _socket_activated
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
#             path alone. %(h)s is the peer (nginx: 127.0.0.1); the client's
#             address is in nginx's log.
#   logger_class - gunicorn's logger, computing only the access log atoms the
#             format names (app/serving/access_log.py); the lines are gunicorn's.
accesslog = os.environ.get("MCP_ACCESS_LOG", "-")
if accesslog in ("", "off"):
    accesslog = None
errorlog = "-"
loglevel = os.environ.get("MCP_LOG_LEVEL", "info")
access_log_format = '%(h)s %(p)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'
logger_class = "app.serving.access_log.AccessLogger"

# Process naming
proc_name = os.environ.get("MCP_PROC_NAME", "mcp-server")

# Control socket
#
#   control_socket - gunicorn 27 listens for `gunicornc` commands (reload, worker
#             count, shutdown) on a unix socket, by default in $HOME/.gunicorn/,
#             a path every instance on the VM would share and the hardened
#             systemd units cannot write. Off unless MCP_CONTROL_SOCKET names a
#             path, e.g. /run/mcp-server/gunicorn.ctl (mode 0600).
if os.environ.get("MCP_CONTROL_SOCKET"):
    control_socket = os.environ["MCP_CONTROL_SOCKET"]
else:
    control_socket_disable = True


# Server hooks
#
# systemd: with Type=notify, gunicorn itself sends READY=1 once the arbiter is
# up (it reads NOTIFY_SOCKET), and it takes sockets handed over by socket
# activation (LISTEN_FDS); no hook is needed for either.


def on_starting(server):  # type: ignore[no-untyped-def]
    """Validate the configuration once, in the master, with the real worker count; start the metrics afresh."""
    try:
        settings = Settings.from_env(workers=server.cfg.workers)
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        _remove_temporary_metrics_dir()
        sys.exit(4)
    # One source for the worker count: the workers forked next read the number gunicorn runs.
    os.environ[WORKERS_VARIABLE] = str(server.cfg.workers)
    _warn_if_behind_an_untrusted_proxy(server, settings)
    # Counters of a previous run would be added to this one's.
    for stale in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(stale)


def _warn_if_behind_an_untrusted_proxy(server, settings):  # type: ignore[no-untyped-def]
    """Listening only where a proxy on this machine reaches it (the shipped nginx site proxies to 127.0.0.1:8000)
    while MCP_TRUSTED_PROXIES is 0: every client would then share the proxy's address, and with it one
    failed-credentials limit. Said at start; a worker says it again on the first refusal a proxy forwarded."""
    if settings.trusted_proxies or settings.dev:
        return
    local = _socket_activated or all(
        not isinstance(address, tuple) or is_loopback_host(str(address[0])) for address in server.cfg.address
    )
    if local:
        where = (
            "the socket systemd handed over"
            if _socket_activated
            else ", ".join(
                f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
                for address in server.cfg.address
            )
        )
        server.log.warning(
            "listening on this machine only (%s) with MCP_TRUSTED_PROXIES=0: behind nginx (nginx/mcp-server.conf) "
            "set MCP_TRUSTED_PROXIES=1, or every client shares nginx's address and one failed-credentials limit",
            where,
        )


def _loaded_app(worker):  # type: ignore[no-untyped-def]
    """The Flask app this worker serves: whatever module gunicorn was told to load (wsgi:app or your own)."""
    app = getattr(worker, "wsgi", None)
    return app if isinstance(getattr(app, "extensions", None), dict) and "mcp_bridge" in app.extensions else None


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    """Start the MCP bridge in this worker, after the fork (never in the master), and load the keys.

    Stateful mode also learns when the worker is told to stop (SIGTERM, SIGHUP), to end its open
    session streams then instead of waiting graceful_timeout for clients that never hang up.
    """
    app = _loaded_app(worker)
    if app is not None:
        start_worker(app, stopping=lambda: not worker.alive)


def worker_exit(server, worker):  # type: ignore[no-untyped-def]
    """Close this worker's event loops so their threads end and the process exits promptly."""
    app = _loaded_app(worker)
    if app is not None:
        stop_worker(app)


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    """Tell prometheus_client a worker is gone (its counters stay counted; its live gauges go)."""
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):  # type: ignore[no-untyped-def]
    _remove_temporary_metrics_dir()


def _remove_temporary_metrics_dir() -> None:
    """Remove the metrics folder this file made (one given in the environment belongs to its owner)."""
    # Recognised by its name: a reload (SIGHUP) runs this file again with the variable already set.
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    if folder.startswith(_TEMPORARY_METRICS_PREFIX):
        shutil.rmtree(folder, ignore_errors=True)
