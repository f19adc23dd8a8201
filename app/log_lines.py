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
from typing import Any
from typing import NamedTuple

from app.serving import run_slot

MAX_PENDING = 64


class _Waiting(NamedTuple):
    """A handler's lines waiting for the serving thread's next poll, and for each what logs it if the write fails."""

    lines: list[str]
    fallbacks: list[Callable[[], None]]


# A handler whose emit is a write to its stream (a FileHandler is one too), whatever the stream.
PlainHandler = logging.StreamHandler[Any]
_pending: dict[PlainHandler, _Waiting] = {}

_PLAIN_HANDLERS = (logging.StreamHandler, logging.FileHandler)


def plain_handler(logger: logging.Logger, level: int) -> PlainHandler | None:
    """The logger's one handler, if a line written straight to its stream is all logging would do."""
    # Asked for every line: attribute reads (``x.__class__``, not a call of ``type``), cheapest first.
    handlers = logger.handlers
    if logger.propagate or logger.filters or len(handlers) != 1 or not logger.isEnabledFor(level):
        return None
    handler = handlers[0]
    formatter = handler.formatter
    # The exact type, not a subclass (a rotating handler's emit does more); isinstance tells mypy as much.
    if (
        not isinstance(handler, logging.StreamHandler)
        or handler.__class__ not in _PLAIN_HANDLERS
        or handler.filters
        or handler.level > level
        or formatter.__class__ is not logging.Formatter  # None's class is not either
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


def _flush_handler(handler: PlainHandler) -> None:
    waiting = _pending.get(handler)
    if waiting is None or not waiting.lines:
        return
    lines, fallbacks = waiting.lines[:], waiting.fallbacks[:]
    del waiting.lines[:], waiting.fallbacks[:]
    if write_to(handler, handler.terminator.join(lines)):
        return
    for fallback in fallbacks:
        fallback()  # the stream failed: logging reports it its own way


def flush() -> None:
    """Write the lines kept for the serving thread's next poll."""
    for handler in list(_pending):
        _flush_handler(handler)


atexit.register(flush)


def keep_or_write(handler: PlainHandler, line: str, fallback: Callable[[], None]) -> None:
    """Keep ``line`` for the serving thread's next poll, or write it now; ``fallback()`` logs it if the write fails."""
    if run_slot.holding():
        waiting = _pending.get(handler)
        if waiting is None:
            waiting = _pending[handler] = _Waiting([], [])
        waiting.lines.append(line)
        waiting.fallbacks.append(fallback)
        if len(waiting.lines) >= MAX_PENDING:
            _flush_handler(handler)
    elif not write_to(handler, line):
        fallback()


def write_line(logger: logging.Logger, level: int, line: str) -> None:
    """``logger.log(level, line)`` of a finished line (no arguments), the fast way when it would come to the same."""
    handler = plain_handler(logger, level)
    if handler is None:
        logger.log(level, line)
    else:
        keep_or_write(handler, line, lambda: logger.log(level, line))
