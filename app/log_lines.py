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
SIGKILL loses the lines of the requests it served since its last poll. The
serving thread also keeps its finding that a logger's lines may go straight to
the stream, for ``DECISION_LIFETIME`` seconds: a change of the logging set-up
reaches its lines within a second.
"""

from __future__ import annotations

import atexit
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from app.serving import run_slot

MAX_PENDING = 64
#: How long the serving thread keeps its decision that a logger's lines may go straight to the stream.
DECISION_LIFETIME = 1.0


# A handler whose emit is a write to its stream (a FileHandler is one too), whatever the stream.
PlainHandler = logging.StreamHandler[Any]

_PLAIN_HANDLERS = (logging.StreamHandler, logging.FileHandler)


def plain_handler(logger: logging.Logger, level: int) -> PlainHandler | None:
    """The logger's one handler, if a line written straight to its stream is all logging would do."""
    # Attribute reads (``x.__class__``, not a call of ``type``), cheapest first.
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


class _Batch:
    """One logger's lines kept for the serving thread's next poll, and whether they may go straight to its stream."""

    __slots__ = ("add", "handler", "level", "lines", "logger")

    def __init__(self, logger: logging.Logger, level: int) -> None:
        self.logger = logger
        self.level = level
        self.lines: list[str] = []
        self.handler: PlainHandler | None = None
        self.add: LineWriter | None = None
        self.decide()

    def decide(self) -> None:
        self.handler = plain_handler(self.logger, self.level)
        self.add = self.lines.append if self.handler is not None else None

    def write(self) -> None:
        lines = self.lines
        if not lines:
            return
        # The first n only: a line another thread appends meanwhile (a slot overtaken) waits for the next write.
        n = len(lines)
        kept = lines[:n]
        del lines[:n]
        handler = self.handler
        if handler is None or not write_to(handler, handler.terminator.join(kept)):
            for line in kept:
                self.logger.log(self.level, line)  # the stream failed: logging reports it its own way


#: Writes one finished line.
LineWriter = Callable[[str], None]

# Only the serving thread, holding its slot, reads or changes them; the decisions are taken afresh
# at the first poll DECISION_LIFETIME seconds after they were taken. A batch, once made, stays: a
# thread whose slot was overtaken between taking a batch's ``add`` and calling it still adds to a
# batch that will be written.
_batches: dict[logging.Logger, _Batch] = {}
_decided_at = 0.0


def _serving_batch(logger: logging.Logger, level: int) -> _Batch | None:
    """The serving thread's batch of this logger at this level; None in any other thread."""
    if not run_slot.holding():
        return None
    batch = _batches.get(logger)
    if batch is None:
        batch = _batches[logger] = _Batch(logger, level)
    elif len(batch.lines) >= MAX_PENDING:
        batch.write()
    return batch if batch.level == level else None


def _write_now(handler: PlainHandler | None, logger: logging.Logger, level: int, line: str) -> None:
    if handler is None or not write_to(handler, line):
        logger.log(level, line)  # another set-up, or the stream failed: logging does it its own way


def line_writer(logger: logging.Logger, level: int) -> LineWriter | None:
    """What writes a finished line straight to the logger's stream; None when only ``logger.log`` would do.

    In the serving thread the line is kept for its next poll; in any other it is written at once.
    """
    batch = _serving_batch(logger, level)
    if batch is not None:
        return batch.add
    handler = plain_handler(logger, level)
    return None if handler is None else partial(_write_now, handler, logger, level)


def flush() -> None:
    """Write the lines kept for the serving thread's next poll; once the findings have aged, take them afresh."""
    global _decided_at
    batches = list(_batches.values())
    for batch in batches:
        batch.write()
    now = time.monotonic()
    if now - _decided_at >= DECISION_LIFETIME:
        _decided_at = now
        for batch in batches:
            batch.decide()


atexit.register(flush)


def write_line(logger: logging.Logger, level: int, line: str) -> None:
    """``logger.log(level, line)`` of a finished line (no arguments), the fast way when it would come to the same."""
    batch = _serving_batch(logger, level)
    if batch is None:
        _write_now(plain_handler(logger, level), logger, level, line)
    elif batch.add is None:
        logger.log(level, line)
    else:
        batch.add(line)
