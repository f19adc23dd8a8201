"""One log line, written straight to its stream when that is all the logging machinery would do.

The audit log and the access log write a line per request. Through ``logging`` a
line costs about 17 microseconds (a LogRecord, a formatter, the handler chain);
when the logger's only destination is a plain stream or file handler that prints
the bare message (the default configuration of both), writing the line to that
handler's stream under its lock is the same result for about 3. Any other set-up
(another handler, a filter, a formatter of one's own, a test capturing records)
gets the full ``logging`` path, unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

_PLAIN_HANDLERS = (logging.StreamHandler, logging.FileHandler)


def plain_handler(logger: logging.Logger, level: int) -> logging.StreamHandler | None:  # type: ignore[type-arg]
    """The logger's one handler, if a line written straight to its stream is all logging would do."""
    if logger.propagate or logger.filters or len(logger.handlers) != 1 or not logger.isEnabledFor(level):
        return None
    handler = logger.handlers[0]
    formatter = handler.formatter
    if (
        type(handler) not in _PLAIN_HANDLERS
        or handler.filters
        or handler.level > level
        or formatter is None
        or type(formatter) is not logging.Formatter
        or formatter._fmt != "%(message)s"
    ):
        return None
    return handler  # type: ignore[return-value]


def write_to(handler: logging.StreamHandler, line: str) -> bool:  # type: ignore[type-arg]
    """Write one line to a plain handler's stream, as its emit would; False if the stream failed."""
    handler.acquire()
    try:
        stream = handler.stream
        stream.write(line + handler.terminator)
        stream.flush()
    except Exception:
        return False
    finally:
        handler.release()
    return True


def write_line(logger: logging.Logger, level: int, message: str, *args: object) -> None:
    """``logger.log(level, message, *args)``, the fast way when it would come to the same."""
    handler = plain_handler(logger, level)
    if handler is not None:
        # As LogRecord.getMessage: a single non-empty mapping argument is the mapping to format with.
        values: object = args[0] if len(args) == 1 and isinstance(args[0], Mapping) and args[0] else args
        try:
            line = message % values if args else message
        except Exception:
            handler = None  # logging reports a bad format its own way
    if handler is None or not write_to(handler, line):
        logger.log(level, message, *args)  # the full way; a failing stream is reported as logging reports it
