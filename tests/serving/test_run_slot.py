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
    slot = RunSlot(patience=1.0)
    assert slot.acquire() and slot.held()
    order: list[str] = []

    def second() -> None:
        order.append("waiting")
        assert slot.acquire()
        order.append("running")
        slot.release()

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.1)
    assert order == ["waiting"]
    slot.release()
    thread.join(5)
    assert order == ["waiting", "running"] and not slot.held()


def test_a_holder_that_keeps_the_slot_too_long_is_overtaken() -> None:
    slot = RunSlot(patience=0.05)
    assert slot.acquire()
    result: list[bool] = []
    started = time.monotonic()
    thread = threading.Thread(target=lambda: result.append(slot.acquire()))
    thread.start()
    thread.join(5)
    assert result == [False]  # went ahead without the slot...
    assert 0.04 < time.monotonic() - started < 1.0  # ...after about its patience
    assert slot.overflows == 1
    slot.release()


def test_a_slot_changing_hands_keeps_a_waiter_waiting() -> None:
    slot = RunSlot(patience=0.05)
    assert slot.acquire()
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(slot.acquire()))
    waiter.start()
    for _ in range(4):  # hand the slot to others, each turn shorter than the patience
        time.sleep(0.03)
        slot.release()
        other = threading.Thread(target=lambda: (slot.acquire(), time.sleep(0.01), slot.release()))
        other.start()
        other.join()
        if results:
            break
        assert slot.acquire()
    slot.release()
    waiter.join(5)
    assert True in results or results == []


def test_released_gives_the_slot_back_while_waiting_and_takes_it_again() -> None:
    slot = RunSlot(patience=1.0)
    run_slot.install(slot)
    try:
        assert slot.acquire()
        other: list[bool] = []
        with run_slot.released():
            assert not slot.held()
            thread = threading.Thread(target=lambda: (other.append(slot.acquire()), slot.release()))
            thread.start()
            thread.join(5)
        assert other == [True]
        assert slot.held()
        slot.release()
        with run_slot.released():  # a thread that holds no slot: nothing to give back
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
