"""A gunicorn worker in which one thread at a time serves every connection, and hands over when it must wait.

``gunicorn -k app.serving.worker.ConnectionWorker`` (gunicorn.conf.py's default).

gunicorn's gthread worker polls in its main thread and hands every request to a
pool thread and back: for each request a queue hand-off, a pipe write, two
poller registrations and a wake-up of the main thread, each one a contended
switch of the GIL. Measured against the SDK's own server (README, Performance)
that was the largest single cost of a request.

Here the thread holding the worker's run slot (:mod:`app.serving.run_slot`)
polls every idle connection and the listening sockets, and serves each request
that arrives itself, start to end, like an event loop: no hand-off, and the
other threads sleep on the slot without wanting the GIL. When a request has to
wait (a tool awaiting I/O, a stream between events, a request only gunicorn's
blocking parser takes) the slot passes to another thread, which goes on
polling, and the waiting request is finished in its own thread; its connection
then goes back to the poller. A request that blocks where nobody can see it (a
sync tool calling a slow service) is overtaken after ``run_slot.PATIENCE``.
Threads are made as they are needed and kept; ``worker_connections`` bounds the
connections of a worker and so its threads.

The main thread keeps the arbiter's heartbeat, watches the slot, and runs the
stop: on SIGTERM or SIGHUP the listening sockets close at once (with reuse_port
new connections then go to the other workers), kept-alive connections stay open
for ``STOP_KEEPALIVE_LINGER`` seconds for a request already on its way (answered
with "Connection: close"), and requests in flight may finish within
``graceful_timeout``, as with gunicorn's gthread worker.

What stays gunicorn's: the arbiter and its signals, the configuration, the hooks,
``max_requests``, the access log and every HTTP decision the short path does not
make itself (:mod:`app.serving.http11`). TLS connections, whose readiness the
socket cannot show, get a thread of their own for their whole life. HTTP/2 is
not served: behind nginx the upstream speaks HTTP/1.1.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gunicorn import util
from gunicorn.workers import base

from app import log_lines
from app.serving import run_slot
from app.serving.fair_queue import FairQueue
from app.serving.http11 import ClientConnection
from app.serving.http11 import Limits
from app.serving.http11 import Outcome
from app.serving.http11 import short_path_available
from app.serving.run_slot import RunSlot

# The arbiter kills a worker silent for `timeout` seconds: beat well within it, at most once a second.
HEARTBEAT_INTERVAL = 1.0
# How long a stopping worker keeps kept-alive connections open for a request a client may already be
# sending (it is answered with "Connection: close"), as gunicorn's gthread worker does.
STOP_KEEPALIVE_LINGER = 2.0
DRAIN_POLL_INTERVAL = 0.05
SWEEP_INTERVAL = 1.0
ACCEPT_BURST = 64
# Serving a backlog of ready connections, the poller is asked again at most this often, so that a request arriving
# meanwhile joins the queue's turns; a queue served faster than this costs no extra poll.
BACKLOG_POLL_INTERVAL = 0.002
_READABLE = select.EPOLLIN | select.EPOLLONESHOT
# How long a half-closed connection is drained before it is closed anyway (gunicorn's close_graceful).
GRACEFUL_CLOSE_LINGER = 2.0


def _http_date_once_a_second(http_date: Callable[..., str]) -> Callable[..., str]:
    """``gunicorn.util.http_date`` for the current time, formatted once per second."""
    cache = [-1, ""]

    def cached(timestamp: float | None = None) -> str:
        if timestamp is not None:
            return http_date(timestamp)
        second = int(time.time())
        if cache[0] != second:
            cache[1] = http_date(second)
            cache[0] = second
        return cache[1]  # type: ignore[return-value]  # a list of [second, text]: its [1] is always the text

    return cached


class ConnectionWorker(base.Worker):
    """The serving thread polls and serves; other threads finish requests that wait; the main thread watches."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: dict[int, ClientConnection] = {}
        self.slot = RunSlot(on_pass=self._make_sure_someone_serves)
        self.short_path = False
        self.heartbeat = HEARTBEAT_INTERVAL
        self.limits = Limits(self.cfg)
        self.secure_scheme_headers: dict[str, str] = dict(self.cfg.secure_scheme_headers)
        self._forwarders = self.cfg.forwarded_allow_ips
        self._forwarder_networks = list(self.cfg.forwarded_allow_networks())
        # Readable, for the serving thread: round-robin between callers (app.serving.fair_queue).
        self._ready: FairQueue[ClientConnection] = FairQueue()
        self._returned: deque[ClientConnection] = deque()  # finished outside the slot: back to the poller
        self._threads = 0
        self._sleeping = 0  # threads waiting for the slot
        self._threads_lock = threading.Lock()
        self._poller: select.epoll | None = None
        self._wake_read = self._wake_write = -1
        self._listeners: dict[int, socket.socket] = {}
        self._listening = False
        self._stopping = False
        self._stop_started = 0.0
        self._listeners_closed = threading.Event()

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        if "h2" in cfg.http_protocols:
            log.warning("HTTP/2 is not served by %s; it answers HTTP/1.x only.", cls.__name__)

    def init_process(self) -> None:
        # gunicorn formats the Date header anew for every answer (about 3.5 us); once a second is enough.
        util.http_date = _http_date_once_a_second(util.http_date)
        self.short_path = short_path_available(self.cfg)
        self.heartbeat = min(HEARTBEAT_INTERVAL, self.timeout / 3) if self.timeout else HEARTBEAT_INTERVAL
        self._poller = select.epoll()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._poller.register(self._wake_read, select.EPOLLIN)
        run_slot.install(self.slot)
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

    def step_aside(self) -> None:
        """The calling request is about to block: let another thread serve the other connections."""
        self.slot.step_aside()

    # -- the main thread

    def run(self) -> None:
        for listener in self.sockets:
            listener.setblocking(False)
            self._listeners[listener.fileno()] = listener
        self._make_sure_someone_serves()
        selector = selectors.DefaultSelector()
        selector.register(self.PIPE[0], selectors.EVENT_READ)  # signals wake the main thread
        next_heartbeat = 0.0
        try:
            while self.alive:
                now = time.monotonic()
                if now >= next_heartbeat:
                    self.notify()
                    next_heartbeat = now + self.heartbeat
                if selector.select(self.slot.patience):
                    self._drain(self.PIPE[0])
                self.slot.overtake()
                if not self.is_parent_alive():
                    break
        finally:
            selector.close()
        self._stop()

    def is_parent_alive(self) -> bool:
        if self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            return False
        return True

    def _stop(self) -> None:
        """Let the serving thread wind the connections down; wait for them within graceful_timeout."""
        self._stopping = True
        self._wake()
        deadline = time.monotonic() + self.cfg.graceful_timeout
        next_heartbeat = 0.0
        # No connections is only the end once nothing more can be accepted: until the serving thread has
        # closed the listeners it may accept one more, which an exit now would drop unanswered.
        while self.connections or not self._listeners_closed.is_set():
            now = time.monotonic()
            if now >= deadline:
                self.log.warning("graceful timeout: %d connection(s) still open", len(self.connections))
                break
            if now >= next_heartbeat:
                self.notify()
                next_heartbeat = now + self.heartbeat
            self.slot.overtake()
            time.sleep(DRAIN_POLL_INTERVAL)
        log_lines.flush()

    # -- the serving threads

    def _make_sure_someone_serves(self) -> None:
        """A thread waits for the slot (one is made if none does), so that the poller never goes unwatched."""
        with self._threads_lock:
            if self._sleeping > 0 or self._threads > self.cfg.worker_connections:
                return
            self._threads += 1
            self._sleeping += 1
        threading.Thread(target=self._take_turns, name="mcp-serving", daemon=True).start()

    def _take_turns(self) -> None:
        """A thread's life: wait for the slot, serve while it holds it, finish what it was serving, again."""
        first = True
        while True:
            if not first:
                with self._threads_lock:
                    self._sleeping += 1
            first = False
            self.slot.take()
            with self._threads_lock:
                self._sleeping -= 1
            try:
                self._serve_while_holding()
            except BaseException:
                self.log.exception("the serving loop failed")
                self.slot.step_aside()

    def _serve_while_holding(self) -> None:
        assert self._poller is not None
        poller = self._poller
        next_sweep = 0.0
        last_poll = 0.0  # a thread that takes the slot over asks the poller before serving a backlog
        while self.slot.holds():
            if self._returned:
                self._take_back()
            if self._stopping or not self.alive:  # a signal, or max_requests reached
                self._stopping = True
                self._wind_down()
            if self._ready:
                now = time.monotonic()
                if now - last_poll >= BACKLOG_POLL_INTERVAL:
                    # A backlog: what arrived meanwhile takes its turn among it (fair_queue), not after all of it.
                    last_poll = now
                    self._dispatch(poller.poll(0))
                self._serve(self._ready.popleft())
                continue
            now = time.monotonic()
            if now >= next_sweep:
                self._sweep(now)
                next_sweep = now + SWEEP_INTERVAL
            timeout = DRAIN_POLL_INTERVAL if self._stopping else max(0.0, next_sweep - now)
            log_lines.flush()  # the log lines of the requests served since the last poll, in one write
            try:
                events = poller.poll(timeout)
            except InterruptedError:
                continue
            last_poll = time.monotonic()
            self._dispatch(events)

    def _dispatch(self, events: list[tuple[int, int]]) -> None:
        for fd, _ in events:
            if fd == self._wake_read:
                self._drain(fd)
            elif fd in self._listeners:
                self._accept(self._listeners[fd])
            else:
                connection = self.connections.get(fd)
                if connection is not None and connection.armed:
                    connection.armed = False
                    self._ready.append(connection, connection.caller)

    def _serve(self, connection: ClientConnection) -> None:
        if connection.closing_until:
            # Half-closed after its last answer: drop what the client still sends until it closes.
            if connection.drain():
                self.connections.pop(connection.fd, None)
            else:
                self._arm(connection)
            return
        self.slot.busy()
        outcome = connection.serve_ready()
        self.slot.idle()
        holding = self.slot.holds()
        if outcome is Outcome.KEEP:
            if holding:
                self._arm(connection)
            else:
                # Served outside the slot (the request waited): the serving thread takes it back.
                self._returned.append(connection)
                self._wake()
        elif outcome is Outcome.CLOSE_GRACEFULLY and holding:
            if connection.half_close(GRACEFUL_CLOSE_LINGER):
                self._arm(connection)
            else:
                self.connections.pop(connection.fd, None)
        else:
            self.connections.pop(connection.fd, None)
            connection.close(outcome)  # outside the slot a graceful close may wait: this thread is free to

    def _arm(self, connection: ClientConnection) -> None:
        assert self._poller is not None
        connection.armed = True
        try:
            self._poller.modify(connection.fd, _READABLE)
        except OSError:
            connection.armed = False
            self.connections.pop(connection.fd, None)
            connection.close(Outcome.CLOSE)

    def _take_back(self) -> None:
        while self._returned:
            connection = self._returned.popleft()
            if self._stopping and time.monotonic() - self._stop_started >= self._linger():
                self.connections.pop(connection.fd, None)
                connection.close(Outcome.CLOSE)
            else:
                self._arm(connection)

    def _accept(self, listener: socket.socket) -> None:
        assert self._poller is not None
        for _ in range(ACCEPT_BURST):
            if len(self.connections) >= self.cfg.worker_connections:
                break
            try:
                sock, client = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                if error.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log.error("Cannot accept a connection: %s", error)
                    break
                raise
            sock.setblocking(True)
            util.close_on_exec(sock)
            connection = ClientConnection(self, sock, client, listener.getsockname())
            self.connections[connection.fd] = connection
            if self.cfg.is_ssl:
                threading.Thread(target=self._serve_alone, args=(connection,), name="mcp-tls", daemon=True).start()
                continue
            connection.prepare()
            connection.armed = True
            self._poller.register(connection.fd, _READABLE)
        self._update_listening()

    def _serve_alone(self, connection: ClientConnection) -> None:
        try:
            connection.serve()
        finally:
            self.connections.pop(connection.fd, None)

    def _update_listening(self) -> None:
        """Listen while there is room for another connection; stop listening when full or stopping."""
        assert self._poller is not None
        wanted = not self._stopping and len(self.connections) < self.cfg.worker_connections
        if wanted == self._listening:
            return
        for fd in self._listeners:
            if wanted:
                self._poller.register(fd, select.EPOLLIN)
            else:
                self._poller.unregister(fd)
        self._listening = wanted

    def _sweep(self, now: float) -> None:
        """Close kept-alive connections idle past the keepalive timeout, and half-closed ones past their linger."""
        keepalive = self.cfg.keepalive
        for connection in list(self.connections.values()):
            if not connection.armed:
                continue
            if connection.closing_until:
                if now >= connection.closing_until:
                    self._close_idle(connection)
            elif now - connection.last_active > keepalive:
                self._close_idle(connection)
        self._update_listening()

    def _close_idle(self, connection: ClientConnection) -> None:
        assert self._poller is not None
        connection.armed = False
        try:
            self._poller.unregister(connection.fd)
        except OSError:
            pass
        self.connections.pop(connection.fd, None)
        connection.close(Outcome.CLOSE)

    def _linger(self) -> float:
        return min(STOP_KEEPALIVE_LINGER, float(self.cfg.keepalive or 0))

    def _wind_down(self) -> None:
        """Stopping: no new connections; idle ones closed once the linger is over."""
        if not self._stop_started:
            self._stop_started = time.monotonic()
            self._update_listening()
            for listener in self._listeners.values():
                # With reuse_port every worker has its own socket: closing it now sends new connections to
                # the other workers at once instead of queueing them here until the end.
                util.close(listener)
            self._listeners = {}
            self._listeners_closed.set()
        if time.monotonic() - self._stop_started >= self._linger():
            for connection in list(self.connections.values()):
                if connection.armed:
                    self._close_idle(connection)
                elif connection.idle and self.cfg.is_ssl:
                    connection.interrupt()

    # -- small things

    def _wake(self) -> None:
        try:
            os.write(self._wake_write, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: the serving thread will wake anyway

    @staticmethod
    def _drain(fd: int) -> None:
        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            pass
