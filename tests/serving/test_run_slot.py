"""Request threads take turns; one that blocks where nobody sees it holds the others back only briefly."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from app.serving import run_slot
from app.serving.run_slot import RunSlot
from tests.serving.test_http11 import HOST
from tests.serving.test_http11 import WORKER
from tests.serving.test_http11 import serve
from tests.support.raw_http import Reader


def test_turns_are_taken_one_at_a_time() -> None:
    slot = RunSlot()
    slot.acquire()
    assert slot.held()
    order: list[str] = []

    def second() -> None:
        order.append("waiting")
        slot.acquire()
        order.append("running")
        slot.release()

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.1)
    assert order == ["waiting"]
    slot.release()
    thread.join(5)
    assert order == ["waiting", "running"] and not slot.held()


def test_a_turn_that_lasts_too_long_is_overtaken() -> None:
    slot = RunSlot(patience=0.05)
    slot.acquire()
    assert slot.overtake() is False  # not long enough yet
    entered = threading.Event()
    waiter = threading.Thread(target=lambda: (slot.acquire(), entered.set()))
    waiter.start()
    assert not entered.wait(0.1)
    assert slot.overtake() is True
    assert entered.wait(5)
    waiter.join(5)
    assert slot.overtaken == 1
    assert not slot.held()  # this thread's turn is over...
    slot.release()  # ...so its release is a no-op, and the waiter's turn goes on
    assert slot._lock.locked()


def test_nothing_to_overtake_between_turns() -> None:
    slot = RunSlot(patience=0.0)
    assert slot.overtake() is False
    slot.acquire()
    slot.release()
    assert slot.overtake() is False


def test_released_gives_the_turn_back_while_waiting_and_takes_a_new_one() -> None:
    slot = RunSlot()
    run_slot.install(slot)
    try:
        slot.acquire()
        other: list[str] = []
        with run_slot.released():
            assert not slot.held()
            thread = threading.Thread(target=lambda: (slot.acquire(), other.append("ran"), slot.release()))
            thread.start()
            thread.join(5)
        assert other == ["ran"]
        assert slot.held()
        slot.release()
        with run_slot.released():  # a thread without a turn has nothing to give back
            assert not slot.held()
        assert not slot.held()
    finally:
        run_slot.install(None)


@pytest.mark.e2e
def test_a_blocking_request_does_not_stall_the_worker(tmp_path: Path) -> None:
    served = serve(WORKER, tmp_path)
    try:
        sleeper = socket.create_connection(("127.0.0.1", served.port), timeout=15)
        sleeper.sendall(b"GET /sleep?2 HTTP/1.1\r\n" + HOST + b"\r\n")
        time.sleep(0.2)
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", served.port), timeout=15) as quick:
            for _ in range(5):
                quick.sendall(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
                answer = Reader(quick).answer()
                assert answer is not None and answer.status == 200
        assert time.monotonic() - started < 1.0  # not the 1.8 s the sleeper still had to go
        slept = Reader(sleeper).answer()
        assert slept is not None and slept.body == b"slept"
        sleeper.close()
    finally:
        served.process.stop()
