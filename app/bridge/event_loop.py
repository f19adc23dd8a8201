"""Event loops for the MCP session manager.

Each :class:`ServingLoop` owns an asyncio loop and a ``StreamableHTTPSessionManager``
whose ``run()`` stays entered in a long-lived task. Two ways to run them:

* :class:`LoopPool` (stateless, the default): a request borrows a loop, runs
  the SDK's handler as a task on it and drives the loop from its own thread
  until the next piece of the response is ready. There is no background thread
  and no hop between threads, which is why this works the same under gunicorn's
  gthread workers, under uWSGI without ``--enable-threads`` and under
  ``flask run``.
* :class:`LoopThread` (stateful, MCP_STATEFUL=1): one loop per process in a
  daemon thread, because handshake-era sessions outlive the request that made
  them: a session's server task, its standalone GET stream and its
  server-to-client requests must make progress while no request drives them.

Loops are created lazily in the process that uses them and forgotten after a
fork, so nothing started in gunicorn's master (or in uWSGI's, which loads the
app before forking) leaks into a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import selectors
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING
from typing import Any

import anyio.to_thread
import sse_starlette.sse

from app.serving import run_slot

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

logger = logging.getLogger(__name__)

# The managers one serving loop runs: the configured one first (see ServingLoop).
ManagerFactory = Callable[[], "tuple[StreamableHTTPSessionManager, ...]"]


def _noop() -> None:
    return None


_thread_state = threading.local()


def _without_sse_shutdown_watcher() -> None:
    """Keep sse-starlette from starting its uvicorn shutdown watcher in our loops.

    It keeps "watcher started" per thread, not per loop, and a pooled loop is
    driven by whichever thread borrows it, so every new thread (one per request
    under ``flask run``) would add a task that polls forever. The watcher only
    serves uvicorn's shutdown; gunicorn drains requests itself.
    """
    if getattr(_thread_state, "sse_watcher_suppressed", False):
        return
    _thread_state.sse_watcher_suppressed = True
    state = getattr(sse_starlette.sse, "_get_shutdown_state", None)
    if state is not None:
        state().watcher_started = True


def _register_exit(pool: LoopPool | LoopThread) -> None:
    """Close the pool when the interpreter exits, before it waits for non-daemon threads.

    ``atexit`` runs too late for that (after the join), so use the hook
    ``concurrent.futures`` uses; gunicorn's ``worker_exit`` hook closes the
    pool explicitly as well.
    """
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        try:
            register(pool.close)
        except RuntimeError:  # the interpreter is already shutting down
            pass


class ReadyFirstSelector(selectors.DefaultSelector):
    """A selector that does not poll while the loop has callbacks ready to run, up to a bound.

    asyncio polls its selector once per loop iteration, with a zero timeout when
    callbacks are ready. A serving loop has no sockets of its own to watch while it
    computes an answer, so those polls find nothing; each is still a system call
    that releases the GIL, and in a threaded server every release hands the GIL to
    another thread and back. Every ``POLL_EVERY``-th ready-iteration polls anyway, so
    a hang-up the bridge watches for is never starved by a busy handler, and a loop
    with nothing ready blocks in the selector as always, having given its request's
    run slot back (:mod:`app.serving.run_slot`) while it waits.
    """

    POLL_EVERY = 16

    def __init__(self) -> None:
        super().__init__()
        self._skipped = 0
        #: Set while the loop is run "until idle": instead of waiting, the loop is stopped.
        self.stop_when_idle: asyncio.AbstractEventLoop | None = None
        #: Called once, just before the loop next waits (the bridge starts watching a client then).
        self.before_wait: Callable[[], None] | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout <= 0:
            if self._skipped < self.POLL_EVERY:
                self._skipped += 1
                return []
            self._skipped = 0
            return super().select(timeout)
        self._skipped = 0
        if self.stop_when_idle is not None:
            self.stop_when_idle.stop()
            return []
        if self.before_wait is not None:
            hook, self.before_wait = self.before_wait, None
            hook()
        # The loop has nothing to run until a timer or a socket: another request may run meanwhile.
        with run_slot.released():
            return super().select(timeout)


class ServingLoop:
    """An asyncio loop with running session managers; driven only by the thread that borrowed it.

    ``managers[0]`` answers as configured (Server-Sent Events unless MCP_JSON_RESPONSE);
    a second one, when given, is the same server in JSON-response mode, for requests
    whose answer can only ever be one JSON body (see :mod:`app.bridge`).
    """

    def __init__(self, *managers: StreamableHTTPSessionManager) -> None:
        self.managers = managers
        self.manager = managers[0]
        self.selector = ReadyFirstSelector()
        self.loop = asyncio.SelectorEventLoop(self.selector)
        self._stop = asyncio.Event()
        self._ready = self.loop.create_future()
        self._holder = self.loop.create_task(self._hold())
        self.loop.run_until_complete(self._ready)

    async def _hold(self) -> None:
        try:
            # anyio ties its worker-thread pool to the task that first uses it; do
            # that here, in the task that lives as long as the loop, or every sync
            # tool call would start (and abandon) a new thread.
            await anyio.to_thread.run_sync(_noop)
            async with contextlib.AsyncExitStack() as running:
                for manager in self.managers:
                    await running.enter_async_context(manager.run())
                self._ready.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise

    def run_until_stopped(self, timeout: float | None = None) -> None:
        """Run the loop until a callback calls ``loop.stop()``, or ``timeout`` seconds pass.

        The cheapest way to drive a loop from outside: no future to create, no
        callbacks to add and remove. Whoever stops the loop says why.
        """
        _without_sse_shutdown_watcher()
        handle = self.loop.call_later(timeout, self.loop.stop) if timeout is not None else None
        try:
            self.loop.run_forever()
        finally:
            if handle is not None:
                handle.cancel()

    def run_until_idle(self) -> None:
        """Run what is ready to run, and stop where the loop would wait (or where a callback stops it)."""
        _without_sse_shutdown_watcher()
        self.selector.stop_when_idle = self.loop
        try:
            self.loop.run_forever()
        finally:
            self.selector.stop_when_idle = None

    def drive(self, awaited: asyncio.Future[Any], timeout: float | None = None) -> bool:
        """Run the loop until ``awaited`` is done or ``timeout`` seconds pass; True if it is done.

        Never raises what ``awaited`` raised: the caller inspects it.
        """
        if awaited.done():
            return True
        _without_sse_shutdown_watcher()
        waiter = self.loop.create_future()

        def release(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        awaited.add_done_callback(release)
        handle = self.loop.call_later(timeout, release) if timeout is not None else None
        try:
            self.loop.run_until_complete(waiter)
        finally:
            if handle is not None:
                handle.cancel()
            awaited.remove_done_callback(release)
        return awaited.done()

    def close(self, timeout: float = 5.0) -> None:
        """Leave the managers' ``run()`` and stop the loop's worker threads, which are not daemons.

        Without this a process that ends (a gunicorn worker told to exit) would
        wait forever for the idle threads anyio keeps for sync tools.
        """
        if self.loop.is_closed():
            return
        self._stop.set()
        if not self.drive(self._holder, timeout):
            self._holder.cancel()
            self.drive(self._holder, timeout)
        # Whatever is left (a stateless exchange's cleanup) is cancelled, as asyncio.run() does.
        leftovers = asyncio.all_tasks(self.loop)
        for task in leftovers:
            task.cancel()
        if leftovers:
            self.drive(asyncio.gather(*leftovers, return_exceptions=True), timeout)
        # One more pass runs the callbacks that tell anyio's worker threads to stop.
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


class LoopPool:
    """Idle serving loops of this process, lent out one request at a time."""

    def __init__(self, manager_factory: ManagerFactory) -> None:
        self._factory = manager_factory
        self._idle: list[ServingLoop] = []
        self._lent: set[ServingLoop] = set()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        self.created = 0
        _register_exit(self)

    @property
    def idle(self) -> tuple[ServingLoop, ...]:
        return tuple(self._idle)

    def acquire(self) -> ServingLoop:
        if os.getpid() != self._pid:
            # A forked child inherits no threads and must not touch loops made
            # by its parent: start over.
            self._idle = []
            self._lent = set()
            self._lock = threading.Lock()
            self._pid = os.getpid()
            self._closed = False
            self.created = 0
            _register_exit(self)
        with self._lock:
            if self._idle:
                serving = self._idle.pop()
                self._lent.add(serving)
                return serving
            self.created += 1
        logger.debug("starting event loop %d in process %d", self.created, self._pid)
        serving = ServingLoop(*self._factory())
        with self._lock:
            self._lent.add(serving)
        return serving

    def release(self, serving: ServingLoop) -> None:
        with self._lock:
            self._lent.discard(serving)
            if not self._closed:
                self._idle.append(serving)
                return
        serving.close()

    def close(self) -> None:
        """Close every idle loop, and lent ones that nobody drives any more.

        A loop still running serves a request in another thread: it closes
        when that request gives it back.
        """
        if os.getpid() != self._pid:
            return
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            idle += [serving for serving in self._lent if not serving.loop.is_running()]
        for serving in idle:
            try:
                serving.close()
            except Exception:
                logger.exception("an event loop did not close cleanly")


class LoopThread:
    """The process's one serving loop, running in a daemon thread (stateful mode)."""

    def __init__(self, manager_factory: ManagerFactory) -> None:
        self._factory = manager_factory
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._serving: ServingLoop | None = None
        self._thread: threading.Thread | None = None
        _register_exit(self)

    @property
    def serving(self) -> ServingLoop:
        """The running loop of this process, started on first use (after a fork, started anew)."""
        if self._pid != os.getpid() or self._serving is None:
            with self._lock:
                if self._pid != os.getpid() or self._serving is None:
                    self._start()
        assert self._serving is not None
        return self._serving

    def _start(self) -> None:
        ready: list[ServingLoop | BaseException] = []
        started = threading.Event()

        def run() -> None:
            try:
                serving = ServingLoop(*self._factory())
            except BaseException as exc:
                ready.append(exc)
                started.set()
                return
            ready.append(serving)
            started.set()
            _without_sse_shutdown_watcher()
            serving.loop.run_forever()

        thread = threading.Thread(target=run, name="mcp-event-loop", daemon=True)
        thread.start()
        started.wait()
        if isinstance(ready[0], BaseException):
            raise ready[0]
        self._serving, self._thread, self._pid = ready[0], thread, os.getpid()
        logger.debug("started the event loop thread in process %d", self._pid)

    def close(self) -> None:
        """Stop the loop thread, then leave the manager (which ends every session)."""
        if self._pid != os.getpid() or self._serving is None or self._thread is None:
            return
        serving, thread = self._serving, self._thread
        self._serving = None
        serving.loop.call_soon_threadsafe(serving.loop.stop)
        thread.join(10)
        serving.close()
