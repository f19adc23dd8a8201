"""Logging: one line format for the server's logs, the audit log as pure JSON lines, no query string logged."""

from __future__ import annotations

import logging
import re

from app import audit


class RedactQueryStrings(logging.Filter):
    """Drop query strings from request lines: a misbehaving client may put a token there.

    The development server (``flask run``) logs whole request lines; gunicorn's
    access log format in gunicorn.conf.py never includes the query string.
    """

    _request_line = re.compile(r"^([A-Z]+ [^?\s]*)\?\S*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self._request_line.sub(r"\1", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def init_app() -> None:
    """Configure the process's logging; idempotent, as every app a process builds calls it."""
    # Before the SDK's MCPServer, whose own basicConfig would print bare messages.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    # The SDK logs every stateless exchange at INFO; keep its warnings and errors.
    logging.getLogger("mcp").setLevel(logging.WARNING)
    # One pure JSON object per line, whatever the format of the other logs.
    audit.audit_logger.setLevel(logging.INFO)
    audit.audit_logger.propagate = False
    if not any(getattr(handler, "mcp_audit", False) for handler in audit.audit_logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.mcp_audit = True  # type: ignore[attr-defined]  # our marker: this handler is set up once
        audit.audit_logger.addHandler(handler)
    werkzeug_logger = logging.getLogger("werkzeug")
    if not any(isinstance(f, RedactQueryStrings) for f in werkzeug_logger.filters):
        werkzeug_logger.addFilter(RedactQueryStrings())
