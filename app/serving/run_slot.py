"""One request at a time runs Python code in a worker process; the others wait their turn outside the GIL.

CPython hands its GIL over whenever the holder makes a blocking system call:
every socket read and write, every log line, every poll of an event loop. With a
dozen request threads waiting for it, each of those is a futex wake and two
context switches, and a request's work is cut into slices interleaved with the
others'. Measured with strace under the benchmark's load (16 connections, 2
workers): about 26 futex calls per request with free-for-all threads, 12 with
turns; the SDK's own asyncio server makes none.

A request takes the slot once it has been read and gives it back once its answer
and log lines are written. It also gives it back whenever it waits: the bridge's
event loop has nothing to run (a tool awaiting I/O or a timer, a stream waiting
for its next event), or a stateful request waits for the loop thread. Waiting for
a turn is a plain blocking lock acquisition: no polling, no wake-ups.

A request that blocks where nobody can see it (a sync tool calling a slow
service, a slow client) must not hold the others back: the worker's main thread
calls :meth:`RunSlot.overtake` every ``patience`` seconds, and a turn that has
lasted longer is overtaken, the slot passes to the next request, and the one
that was overtaken goes on without a slot, as every request would without turns.

Only the connection worker has a slot (:func:`install`); elsewhere (gthread,
uWSGI, ``flask run``) :func:`released` does nothing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

PATIENCE = 0.020
NOT_STARTED = float("inf")  # no turn has started: nothing to overtake


class RunSlot:
    """A lock taken by request threads around their work, that a watchdog may pass on."""

    def __init__(self, patience: float = PATIENCE) -> None:
        self.patience = patience
        self._lock = threading.Lock()  # held by the current turn; any thread may release a Lock
        self._books = threading.Lock()  # guards the turn bookkeeping, never held while blocking
        self._turn = 0
        self._started = NOT_STARTED
        self._holding = threading.local()
        self.overtaken = 0  # turns passed on by the watchdog

    def held(self) -> bool:
        """Whether the calling thread has the current turn."""
        return getattr(self._holding, "turn", None) == self._turn and self._lock.locked()

    def acquire(self) -> None:
        """Wait for this thread's turn."""
        self._lock.acquire()
        with self._books:
            self._turn += 1
            self._started = time.monotonic()
            self._holding.turn = self._turn

    def release(self) -> None:
        """End this thread's turn, unless it was overtaken (the slot is someone else's then)."""
        with self._books:
            if getattr(self._holding, "turn", None) != self._turn or not self._lock.locked():
                self._holding.turn = None
                return
            self._holding.turn = None
            self._turn += 1  # no one's turn until the next acquire
            self._started = NOT_STARTED
            self._lock.release()

    def overtake(self, now: float | None = None) -> bool:
        """Pass the slot on if the current turn has lasted ``patience`` seconds; True if it did."""
        with self._books:
            if (
                not self._lock.locked()
                or (now if now is not None else time.monotonic()) - self._started < self.patience
            ):
                return False
            self._turn += 1  # the holder's release is now a no-op
            self._started = NOT_STARTED
            self.overtaken += 1
            self._lock.release()
            return True


_installed: RunSlot | None = None


def install(slot: RunSlot | None) -> None:
    """Make ``slot`` the process's slot (the connection worker does, once its process is started)."""
    global _installed
    _installed = slot


@contextlib.contextmanager
def released() -> Iterator[None]:
    """Give the calling thread's turn back while it waits; wait for a new one afterwards."""
    slot = _installed
    if slot is None or not slot.held():
        yield
        return
    slot.release()
    try:
        yield
    finally:
        slot.acquire()
