"""One log line, written straight to its stream when that is all the logging machinery would do.

The audit log and the access log write a line per request. Through ``logging`` a
line costs about 17 microseconds (a LogRecord, a formatter, the handler chain);
when the logger's only destination is a plain stream or file handler that prints
the bare message (the default configuration of both), writing the line to that
handler's stream under its lock is the same result for about 3. Any other set-up
(another handler, a filter, a formatter of one's own, a test capturing records)
gets the full ``logging`` path, unchanged.

In the connection worker the serving thread (the holder of its run slot, see
:mod:`app.serving.run_slot`) serves request after request between two polls:
its lines are kept and written together, in one write, when it next polls
(:func:`flush`, which the worker calls), or once ``MAX_PENDING`` lines wait. Each
write is a system call that a shared log file also serialises between the
worker processes. A line then reaches its stream microseconds to milliseconds
after its request ended, never later than the next poll; a worker killed with
SIGKILL loses the lines of the requests it served since its last poll.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

from app.serving import run_slot

MAX_PENDING = 64
# A handler whose emit is a write to its stream (a FileHandler is one too), whatever the stream.
PlainHandler = logging.StreamHandler[Any]
# handler -> lines waiting for the serving thread's next poll, each with what logs it if the write fails
_pending: dict[PlainHandler, list[tuple[str, Callable[[], None]]]] = {}

_PLAIN_HANDLERS = (logging.StreamHandler, logging.FileHandler)


def plain_handler(logger: logging.Logger, level: int) -> PlainHandler | None:
    """The logger's one handler, if a line written straight to its stream is all logging would do."""
    if logger.propagate or logger.filters or len(logger.handlers) != 1 or not logger.isEnabledFor(level):
        return None
    handler = logger.handlers[0]
    formatter = handler.formatter
    # The exact type, not a subclass (a rotating handler's emit does more); isinstance tells mypy as much.
    if (
        not isinstance(handler, logging.StreamHandler)
        or type(handler) not in _PLAIN_HANDLERS
        or handler.filters
        or handler.level > level
        or formatter is None
        or type(formatter) is not logging.Formatter
        or formatter._fmt != "%(message)s"
    ):
        return None
    return handler


def write_to(handler: PlainHandler, line: str) -> bool:
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


def _keep(handler: PlainHandler, line: str, fallback: Callable[[], None]) -> None:
    lines = _pending.get(handler)
    if lines is None:
        lines = _pending[handler] = []
    lines.append((line, fallback))
    if len(lines) >= MAX_PENDING:
        _flush_handler(handler)


def _flush_handler(handler: PlainHandler) -> None:
    lines = _pending.get(handler)
    if not lines:
        return
    batch, lines[:] = list(lines), []
    if write_to(handler, handler.terminator.join(line for line, _ in batch)):
        return
    for _, fallback in batch:
        fallback()  # the stream failed: logging reports it its own way


def flush() -> None:
    """Write the lines kept for the serving thread's next poll."""
    for handler in list(_pending):
        _flush_handler(handler)


atexit.register(flush)


def keep_or_write(handler: PlainHandler, line: str, fallback: Callable[[], None]) -> None:
    """Keep ``line`` for the serving thread's next poll, or write it now; ``fallback()`` logs it if the write fails."""
    if run_slot.holding():
        _keep(handler, line, fallback)
    elif not write_to(handler, line):
        fallback()


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
    if handler is None:
        logger.log(level, message, *args)
        return
    keep_or_write(handler, line, lambda: logger.log(level, message, *args))
