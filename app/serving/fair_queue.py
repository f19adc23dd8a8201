"""The serving thread's queue of readable connections: fair between callers, first come first served within one.

One poll can report dozens of connections at once: an abusive caller that opens
32 streams in a burst puts 32 connections in the queue, and each start costs the
serving thread milliseconds. Served first come first served, a well-behaved
caller's request that arrived among them waits for all of them (measured with
``python -m bench.hostile_load``: 419 ms behind 27 stream starts, where a quiet
request takes 3 ms). So the queue takes turns between callers: each key
(:attr:`ClientConnection.caller`, the credential of the connection's last
request, or 0 for a connection not served yet) has its own line, and the lines
are served one item each, round-robin. A caller then waits for at most one item
of each other caller ahead of it, however many it queues itself.

With one connection ready at a time, the common case, this is two dict and
deque operations more than a plain deque.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic
from typing import TypeVar

Item = TypeVar("Item")
_NOBODY = object()


class FairQueue(Generic[Item]):
    """A queue served round-robin between keys, FIFO within a key."""

    __slots__ = ("_lines", "_turns", "_served", "_size")

    def __init__(self) -> None:
        self._lines: dict[Hashable, deque[Item]] = {}
        self._turns: deque[Hashable] = deque()  # the keys with something queued, in the order of their turns
        # The key just served, if it has more queued: it goes to the back at the next popleft, so a key that
        # arrives while its item is being served goes ahead of it.
        self._served: Hashable = _NOBODY
        self._size = 0

    def append(self, item: Item, key: Hashable) -> None:
        """Queue ``item`` at the end of ``key``'s line; a key new to the queue takes its turn after the others."""
        line = self._lines.get(key)
        if line is None:
            self._lines[key] = deque((item,))
            self._turns.append(key)
        else:
            line.append(item)
        self._size += 1

    def popleft(self) -> Item:
        """The first item of the key whose turn it is (IndexError when empty); that key goes to the back."""
        if self._served is not _NOBODY:
            self._turns.append(self._served)
            self._served = _NOBODY
        key = self._turns.popleft()
        line = self._lines[key]
        item = line.popleft()
        if line:
            self._served = key
        else:
            del self._lines[key]
        self._size -= 1
        return item

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0
