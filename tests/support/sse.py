"""Server-Sent Events read one at a time from a streamed httpx2 response, for tests that check the wire.

Parsed as the HTML standard's event stream interpretation (9.2.6) needs it here:
``field: value`` lines, a blank line ends an event, lines starting with ``:`` are
comments (the keep-alive pings), several ``data`` lines join with newlines.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2


@dataclass(frozen=True)
class Event:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class EventStream:
    def __init__(self, response: httpx2.Response) -> None:
        self.response = response
        self._lines: Iterator[str] = response.iter_lines()

    def next_event(self) -> Event:
        fields: dict[str, Any] = {}
        data: list[str] = []
        for line in self._lines:
            if line == "":
                if fields or data:
                    return Event(data="\n".join(data), **fields)
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "retry":
                fields["retry"] = int(value)
            elif name in ("event", "id"):
                fields[name] = value
        raise EOFError("the stream ended")

    def events(self, count: int) -> list[Event]:
        return [self.next_event() for _ in range(count)]
