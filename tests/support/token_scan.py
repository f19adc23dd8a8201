"""Finding tokens where they must never be: log lines of the app and of every server the suite starts."""

from __future__ import annotations

import logging
import re

# A JWT (header.payload.) as the mock issuers, the development server and the attack battery mint them,
# or an Authorization header value.
TOKEN = re.compile(r"eyJ[\w-]{4,}\.eyJ[\w-]{4,}\.|Bearer\s+[A-Za-z0-9\-._~+/]{8,}")


def find_tokens(text: str) -> list[str]:
    return [match.group(0)[:40] + "..." for match in TOKEN.finditer(text)]


class TokenSniffer(logging.Handler):
    """Sees every record the app logs in this process, and remembers those that carry a token."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.hits: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge here
            return
        if record.exc_info and record.exc_info[1] is not None:
            message += " " + str(record.exc_info[1])
        found = find_tokens(message)
        if found:
            self.hits.append(f"{record.name}: {found}")
