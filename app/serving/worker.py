"""A gunicorn worker that serves each connection in the thread that took it, keep-alive requests included.

``gunicorn -k app.serving.worker.ConnectionWorker`` (gunicorn.conf.py's default).

gunicorn's gthread worker accepts and polls in its main thread and hands every
request to a pool thread, and back again when the answer is out: for each request
a queue hand-off, a pipe write, two poller registrations and a wake-up of the main
thread, each one a contended switch of the GIL. Measured against the SDK's own
server (README, Performance) that was the largest single cost of a request. Here
the main thread only accepts connections and keeps the arbiter's heartbeat; each
connection gets a thread of its own (a spare one if there is, a new one otherwise)
that reads its requests, runs the app and writes the answers until the connection
ends. A request costs no hand-off at all, and a long stream (a tool reporting
progress) holds only its own connection's thread, never a pool slot another
request waits for. The threads take turns to run (:mod:`app.serving.run_slot`)
instead of fighting over the GIL at every system call.

What stays gunicorn's: the arbiter and its signals (SIGHUP, SIGTERM drain, SIGKILL
of a stuck worker through the heartbeat), the configuration, the hooks,
``max_requests``, the access log and every HTTP decision (see
:mod:`app.serving.http11`). Concurrency is bounded by ``worker_connections``
(connections per worker, each one thread; gthread's ``threads`` setting does not
apply). HTTP/2 is not served: behind nginx the upstream speaks HTTP/1.1.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import queue
import selectors
import socket
import threading
import time
from typing import Any

from gunicorn import util
from gunicorn.workers import base

from app.serving import run_slot
from app.serving.http11 import ClientConnection
from app.serving.http11 import Limits
from app.serving.http11 import short_path_available
from app.serving.run_slot import RunSlot

# The arbiter kills a worker silent for `timeout` seconds: beat well within it, at most once a second.
HEARTBEAT_INTERVAL = 1.0
# How long a stopping worker keeps kept-alive connections open for a request a client may already be
# sending (it is answered with "Connection: close"), as gunicorn's gthread worker does.
STOP_KEEPALIVE_LINGER = 2.0
DRAIN_POLL_INTERVAL = 0.05
ACCEPT_BURST = 64


class ConnectionWorker(base.Worker):
    """One thread per client connection; the main thread accepts and heartbeats."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: set[ClientConnection] = set()
        self._lock = threading.Lock()
        self._spare: queue.SimpleQueue[ClientConnection | None] = queue.SimpleQueue()
        self._spare_threads = 0
        self.short_path = False
        self.slot = RunSlot()
        self.heartbeat = HEARTBEAT_INTERVAL
        self.limits = Limits(self.cfg)
        self.secure_scheme_headers: dict[str, str] = dict(self.cfg.secure_scheme_headers)
        self._forwarders = self.cfg.forwarded_allow_ips
        self._forwarder_networks = list(self.cfg.forwarded_allow_networks())

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        if "h2" in cfg.http_protocols:
            log.warning("HTTP/2 is not served by %s; it answers HTTP/1.x only.", cls.__name__)

    def init_process(self) -> None:
        self.short_path = short_path_available(self.cfg)
        run_slot.install(self.slot)
        self.heartbeat = min(HEARTBEAT_INTERVAL, self.timeout / 3) if self.timeout else HEARTBEAT_INTERVAL
        super().init_process()

    def is_trusted_forwarder(self, client: Any) -> bool:
        """Whether this peer may set the scheme headers, as gunicorn's forwarded_allow_ips decides."""
        if not isinstance(client, tuple):
            return True  # a unix socket: only a local proxy can connect
        if "*" in self._forwarders:
            return True
        try:
            address = ipaddress.ip_address(client[0])
        except ValueError:
            return False
        return any(address in network for network in self._forwarder_networks)

    # -- the main thread

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.PIPE[0], selectors.EVENT_READ, None)  # signals wake the loop
        for listener in self.sockets:
            listener.setblocking(False)
        accepting = False
        next_heartbeat = 0.0
        try:
            while self.alive:
                now = time.monotonic()
                if now >= next_heartbeat:
                    self.notify()
                    next_heartbeat = now + self.heartbeat
                room = len(self.connections) < self.cfg.worker_connections
                if room != accepting:
                    for listener in self.sockets:
                        if room:
                            selector.register(listener, selectors.EVENT_READ, listener)
                        else:
                            selector.unregister(listener)
                    accepting = room
                for key, _ in selector.select(self.slot.patience):
                    if key.data is None:
                        self._drain_wakeup_pipe()
                    else:
                        self._accept(key.data)
                self.slot.overtake()
                if not self.is_parent_alive():
                    break
        finally:
            selector.close()
        self._stop_gracefully()

    def is_parent_alive(self) -> bool:
        if self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            return False
        return True

    def _drain_wakeup_pipe(self) -> None:
        try:
            while os.read(self.PIPE[0], 4096):
                pass
        except OSError:
            pass

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(ACCEPT_BURST):
            if len(self.connections) >= self.cfg.worker_connections:
                return
            try:
                sock, client = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log.error("Cannot accept a connection: %s", error)
                    return
                raise
            sock.setblocking(True)
            util.close_on_exec(sock)
            connection = ClientConnection(self, sock, client, listener.getsockname())
            with self._lock:
                self.connections.add(connection)
                spare = self._spare_threads > 0
                if spare:
                    self._spare_threads -= 1
            if spare:
                self._spare.put(connection)
            else:
                threading.Thread(
                    target=self._serve_connections, args=(connection,), name="mcp-connection", daemon=True
                ).start()

    def _serve_connections(self, connection: ClientConnection | None) -> None:
        """A connection thread: serve its connection, then wait as a spare for the next one."""
        while connection is not None:
            try:
                connection.serve()
            finally:
                with self._lock:
                    self.connections.discard(connection)
                    self._spare_threads += 1
            connection = self._spare.get()

    # -- stopping

    def _stop_gracefully(self) -> None:
        """Stop accepting, let requests in flight finish within graceful_timeout, close idle connections."""
        for listener in self.sockets:
            # With reuse_port every worker has its own socket: closing it now sends new connections to
            # the other workers at once instead of queueing them here until the end.
            util.close(listener)
        started = time.monotonic()
        linger = min(STOP_KEEPALIVE_LINGER, float(self.cfg.keepalive or 0))
        deadline = started + self.cfg.graceful_timeout
        next_heartbeat = 0.0
        while True:
            with self._lock:
                connections = list(self.connections)
            if not connections:
                break
            now = time.monotonic()
            if now >= deadline:
                self.log.warning("graceful timeout: %d connection(s) still open", len(connections))
                break
            if now >= next_heartbeat:
                self.notify()
                next_heartbeat = now + self.heartbeat
            if now - started >= linger:
                for connection in connections:
                    if connection.idle:
                        connection.interrupt()
            self.slot.overtake()
            time.sleep(DRAIN_POLL_INTERVAL)
        with self._lock:
            spare, self._spare_threads = self._spare_threads, 0
        for _ in range(spare):
            self._spare.put(None)
