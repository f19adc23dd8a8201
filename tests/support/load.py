"""Steady load on a loopback server for lifecycle tests: a few client threads, bounded in time.

Each request opens a new connection (so the kernel spreads them across
gunicorn's reuse_port sockets and a dead worker cannot leave a broken
keep-alive connection behind) and is recorded with its start time and outcome.
"""

from __future__ import annotations

import http.client
import os
import threading
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.jsonrpc import call_tool


@dataclass(frozen=True)
class Outcome:
    started: float
    finished: float
    status: int | None  # None: the connection failed or was cut
    error: str = ""


@dataclass
class Load:
    url: str
    token: str = field(repr=False)
    clients: int = 4
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _one(self) -> Outcome:
        parts = urlsplit(self.url)
        headers, body = call_tool("greet_user", {"name": "load"}, token=self.token)
        started = time.monotonic()
        connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        try:
            connection.request("POST", parts.path, body=body, headers={**headers, "Connection": "close"})
            response = connection.getresponse()
            data = response.read()
            ok = response.status == 200 and b"Hello, load!" in data
            return Outcome(started, time.monotonic(), response.status if ok else -response.status)
        except (OSError, http.client.HTTPException) as exc:
            return Outcome(started, time.monotonic(), None, type(exc).__name__)
        finally:
            connection.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.outcomes.append(self._one())

    def __enter__(self) -> Load:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(40)

    def failures(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.status != 200]

    def succeeded_after(self, moment: float) -> int:
        return sum(1 for outcome in self.outcomes if outcome.started > moment and outcome.status == 200)


def children(pid: int) -> set[int]:
    """Process ids whose parent is ``pid`` (gunicorn's workers)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.add(int(entry.name))
    return found


def wait_for(condition: object, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(interval)
    return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
