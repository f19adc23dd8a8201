"""One request at a time runs Python code in a worker process; the others wait their turn outside the GIL.

CPython hands its GIL over whenever the holder makes a blocking system call:
every socket read and write, every log line, every poll of an event loop. With a
dozen request threads waiting for it, each of those is a futex wake and two
context switches, and a request's work is cut into slices interleaved with the
others'. Measured with the benchmark at 16 connections (README, Performance):
taking turns instead roughly doubled the requests per second and cut the p99
several-fold at the same CPU time per request.

A request takes the slot once it has been read and gives it back once its answer
and log lines are written. It also gives it back whenever it waits: the bridge's
event loop has nothing to run (a tool awaiting I/O or a timer, a stream waiting
for its next event), or a stateful request waits for the loop thread. A request
that blocks where nobody can see it (a sync tool calling a slow service, a slow
client) holds the others back only briefly: a thread that has waited
``patience`` seconds while the same request held the slot all along goes ahead
without it, exactly as it would have run with no slot at all.

Only the connection worker has a slot (:func:`install`); elsewhere (gthread,
uWSGI, ``flask run``) :func:`released` does nothing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

PATIENCE = 0.010


class RunSlot:
    """A lock with a turn counter, taken by request threads around their work."""

    def __init__(self, patience: float = PATIENCE) -> None:
        self.patience = patience
        self._lock = threading.Lock()
        self._turn = 0  # counts the takes, so a waiter can tell whether the slot has changed hands
        self._holding = threading.local()
        self.overflows = 0  # times a thread went ahead without the slot

    def held(self) -> bool:
        return getattr(self._holding, "slot", False)

    def acquire(self) -> bool:
        """Take the slot; False when its holder has kept it ``patience`` seconds and this thread goes ahead."""
        lock = self._lock
        if not lock.acquire(False):
            while True:
                turn = self._turn
                if lock.acquire(timeout=self.patience):
                    break
                if self._turn == turn:
                    self.overflows += 1
                    return False
        self._turn += 1
        self._holding.slot = True
        return True

    def release(self) -> None:
        """Give the slot back, if this thread holds it."""
        if self.held():
            self._holding.slot = False
            self._lock.release()


_installed: RunSlot | None = None


def install(slot: RunSlot | None) -> None:
    """Make ``slot`` the process's slot (the connection worker does, once its process is started)."""
    global _installed
    _installed = slot


@contextlib.contextmanager
def released() -> Iterator[None]:
    """Give the calling thread's slot back while it waits; take it again afterwards."""
    slot = _installed
    if slot is None or not slot.held():
        yield
        return
    slot.release()
    try:
        yield
    finally:
        slot.acquire()
