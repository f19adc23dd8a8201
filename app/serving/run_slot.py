"""The worker's run slot: the one thread that serves connections, and how it passes that job on.

CPython runs one thread at a time, and hands its GIL over whenever the holder
makes a blocking system call: every socket read and write, every log line, every
poll. With a thread per connection all wanting the GIL, each of those is a futex
wake and two context switches, and each request is cut into slices interleaved
with the others' (strace under the benchmark's load: about 26 futex calls per
request; the SDK's own asyncio server makes none). So a worker process has one
serving thread at a time, the holder of this slot: it polls every idle
connection, reads what arrives, runs each request to its end and writes the
answer, like an event loop, and the other threads sleep on the slot's lock
without wanting the GIL at all.

A request that has to wait must not keep the others waiting: the bridge's event
loop with nothing to run (a tool awaiting I/O or a timer, a stream between two
events), a stateful request waiting for the loop thread, gunicorn's own blocking
request parser. There the serving thread calls :func:`released` (or
:meth:`RunSlot.step_aside`): the slot passes to a sleeping thread, which takes
over the polling, and the waiting request goes on in its own thread, outside the
slot, until it has been answered. A request that blocks where nobody can see it
(a sync tool calling a slow service, a slow client) is overtaken: the worker's
main thread calls :meth:`RunSlot.overtake` every ``patience`` seconds and hands the
slot on when one request has held it that long.

Only the connection worker has a slot (:func:`install`); elsewhere (gthread,
uWSGI, ``flask run``) :func:`released` does nothing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator

PATIENCE = 0.020
NOT_BUSY = float("inf")


class RunSlot:
    """A lock held by the serving thread; passed on when it waits, or by the watchdog when it is stuck."""

    def __init__(self, patience: float = PATIENCE, on_pass: Callable[[], None] | None = None) -> None:
        """``on_pass`` is called whenever the slot is passed on (the worker makes sure a thread takes it)."""
        self.patience = patience
        self._on_pass = on_pass
        self._lock = threading.Lock()  # held by the serving thread; any thread may release a Lock
        self._books = threading.Lock()  # guards the bookkeeping below, never held while blocking
        self._term = 0  # counts the terms of office, so a thread can tell whether the slot is still its own
        self._busy_since = NOT_BUSY
        self._mine = threading.local()
        self.overtaken = 0  # terms ended by the watchdog

    def take(self) -> None:
        """Wait until the calling thread holds the slot."""
        self._lock.acquire()
        with self._books:
            self._term += 1
            self._busy_since = NOT_BUSY
            self._mine.term = self._term

    def holds(self) -> bool:
        """Whether the calling thread holds the slot."""
        return getattr(self._mine, "term", None) == self._term

    def busy(self) -> None:
        """The holder starts on a request: from now on the watchdog times it."""
        if self.holds():
            self._busy_since = time.monotonic()

    def idle(self) -> None:
        """The holder is back to polling."""
        if self.holds():
            self._busy_since = NOT_BUSY

    def step_aside(self) -> bool:
        """Pass the slot on if the calling thread holds it; True if it did."""
        with self._books:
            if getattr(self._mine, "term", None) != self._term:
                return False
            self._end_term()
        if self._on_pass is not None:
            self._on_pass()
        return True

    def overtake(self, now: float | None = None) -> bool:
        """Pass the slot on if its holder has been on one request ``patience`` seconds; True if it did."""
        with self._books:
            started = self._busy_since
            if (now if now is not None else time.monotonic()) - started < self.patience:
                return False
            self.overtaken += 1
            self._end_term()
        if self._on_pass is not None:
            self._on_pass()
        return True

    def _end_term(self) -> None:
        self._term += 1  # the former holder's holds() is False from now on
        self._busy_since = NOT_BUSY
        self._lock.release()


_installed: RunSlot | None = None


def install(slot: RunSlot | None) -> None:
    """Make ``slot`` the process's slot (the connection worker does, once its process is started)."""
    global _installed
    _installed = slot


def holding() -> bool:
    """Whether the calling thread is a worker's serving thread (holds its slot)."""
    slot = _installed
    return slot is not None and slot.holds()


@contextlib.contextmanager
def released() -> Iterator[None]:
    """Around a wait in a request: the other connections are served meanwhile, by another thread.

    The request goes on, after the wait, in its own thread outside the slot.
    """
    slot = _installed
    if slot is not None:
        slot.step_aside()
    yield
