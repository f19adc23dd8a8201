"""A log line written straight to its stream is exactly the line logging would write, and only then."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from app.log_lines import plain_handler
from app.log_lines import write_line


class Isolated(logging.Logger):
    """A logger of its own, outside the logging tree (pytest attaches its capture to the tree's loggers)."""


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = Isolated("tests.log_lines")
    log.setLevel(logging.INFO)
    log.propagate = False
    yield log


def plain(stream: io.StringIO) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def test_the_plain_set_up_takes_the_short_way_and_writes_the_same_line(logger: logging.Logger) -> None:
    short, logged = io.StringIO(), io.StringIO()
    logger.addHandler(plain(short))
    assert plain_handler(logger, logging.INFO) is logger.handlers[0]
    write_line(logger, logging.INFO, '1 "x" 100%')
    logger.handlers[0].setStream(logged)
    logger.info('1 "x" 100%')
    assert short.getvalue() == logged.getvalue() == '1 "x" 100%\n'


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_any_other_set_up_gets_the_logging_path(logger: logging.Logger) -> None:
    captured = Records()
    logger.addHandler(plain(io.StringIO()))
    logger.addHandler(captured)
    write_line(logger, logging.INFO, "one and 100%")
    assert [(r.getMessage(), r.levelno) for r in captured.records] == [("one and 100%", logging.INFO)]


@pytest.mark.parametrize("change", ["filter", "formatter", "level", "propagate", "handler class"])
def test_what_makes_the_short_way_unsafe(logger: logging.Logger, change: str) -> None:
    handler = plain(io.StringIO())
    logger.addHandler(handler)
    if change == "filter":
        handler.addFilter(lambda record: True)
    elif change == "formatter":
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    elif change == "level":
        handler.setLevel(logging.ERROR)
    elif change == "propagate":
        logger.propagate = True
    else:
        logger.removeHandler(handler)
        logger.addHandler(Records())
    assert plain_handler(logger, logging.INFO) is None


@pytest.fixture
def failed_stream(logger: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The logger's one plain handler writes to a stream that fails; what its handleError reported."""

    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("disk full")

    handler = plain(Broken())
    logger.addHandler(handler)
    reported: list[object] = []
    monkeypatch.setattr(handler, "handleError", lambda record: reported.append(record.getMessage()))
    return reported


def test_a_failed_stream_is_reported_as_logging_reports_it(logger: logging.Logger, failed_stream: list[object]) -> None:
    write_line(logger, logging.INFO, "the line")
    assert failed_stream == ["the line"]


def test_the_serving_thread_writes_its_lines_together_at_the_next_poll(logger: logging.Logger) -> None:
    from app import log_lines
    from app.serving import run_slot

    class Counting(io.StringIO):
        writes = 0

        def write(self, text: str) -> int:
            Counting.writes += 1
            return super().write(text)

    stream = Counting()
    logger.addHandler(plain(stream))
    slot = run_slot.RunSlot()
    run_slot.install(slot)
    try:
        slot.take()
        for number in range(3):
            write_line(logger, logging.INFO, f"line {number}")
        assert stream.getvalue() == ""  # kept for the next poll
        log_lines.flush()
        assert stream.getvalue() == "line 0\nline 1\nline 2\n"
        assert Counting.writes == 1
        slot.step_aside()
        write_line(logger, logging.INFO, "outside the slot")  # any other thread writes at once
        assert stream.getvalue().endswith("outside the slot\n")
    finally:
        run_slot.install(None)
        log_lines.flush()


def test_at_most_max_pending_lines_wait(logger: logging.Logger) -> None:
    from app import log_lines
    from app.serving import run_slot

    stream = io.StringIO()
    logger.addHandler(plain(stream))
    slot = run_slot.RunSlot()
    run_slot.install(slot)
    try:
        slot.take()
        for number in range(log_lines.MAX_PENDING):
            write_line(logger, logging.INFO, str(number))
        assert stream.getvalue() == ""
        write_line(logger, logging.INFO, "one more")
        assert stream.getvalue().count("\n") == log_lines.MAX_PENDING
    finally:
        run_slot.install(None)
        log_lines.flush()


def test_the_serving_thread_keeps_its_finding_for_a_while(
    logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change of the set-up reaches the serving thread's lines once its finding has aged, and then it does."""
    from app import log_lines
    from app.serving import run_slot

    stream = io.StringIO()
    logger.addHandler(plain(stream))
    captured = Records()
    slot = run_slot.RunSlot()
    run_slot.install(slot)
    try:
        slot.take()
        monkeypatch.setattr(log_lines, "DECISION_LIFETIME", 3600.0)
        log_lines.flush()
        write_line(logger, logging.INFO, "before")
        logger.addHandler(captured)  # two handlers: the logging path, once the finding is taken afresh
        write_line(logger, logging.INFO, "same finding")
        log_lines.flush()
        write_line(logger, logging.INFO, "a poll later")
        log_lines.flush()
        assert stream.getvalue() == "before\nsame finding\na poll later\n"
        assert captured.records == []
        monkeypatch.setattr(log_lines, "DECISION_LIFETIME", 0.0)
        log_lines.flush()  # the finding has aged
        write_line(logger, logging.INFO, "afresh")
        assert [r.getMessage() for r in captured.records] == ["afresh"]
        assert stream.getvalue().endswith("a poll later\nafresh\n")  # logging's own write, at once
    finally:
        run_slot.install(None)
        log_lines.flush()


def test_a_failed_stream_at_the_poll_reports_every_kept_line(
    logger: logging.Logger, failed_stream: list[object]
) -> None:
    from app import log_lines
    from app.serving import run_slot

    slot = run_slot.RunSlot()
    run_slot.install(slot)
    try:
        slot.take()
        write_line(logger, logging.INFO, "one")
        write_line(logger, logging.INFO, "two")
        assert failed_stream == []
        log_lines.flush()
        assert failed_stream == ["one", "two"]
    finally:
        run_slot.install(None)
        log_lines.flush()
