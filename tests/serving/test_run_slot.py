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
from tests.support.load import wait_for
from tests.support.raw_http import Reader


def test_one_thread_holds_the_slot_and_passes_it_on() -> None:
    passed: list[str] = []
    slot = RunSlot(on_pass=lambda: passed.append("passed"))
    slot.take()
    assert slot.holds()
    order: list[str] = []

    def other() -> None:
        order.append("waiting")
        slot.take()
        order.append("holding")

    thread = threading.Thread(target=other)
    thread.start()
    # First the evidence that it asks for the slot, then that it is still waiting for it.
    assert wait_for(lambda: order == ["waiting"], 5)
    thread.join(0.1)
    assert thread.is_alive() and order == ["waiting"]
    assert slot.step_aside() is True
    thread.join(5)
    assert order == ["waiting", "holding"]
    assert not slot.holds()  # this thread goes on without it
    assert slot.step_aside() is False  # nothing to pass on: it is not this thread's
    assert passed == ["passed"]


def test_a_holder_busy_too_long_is_overtaken() -> None:
    passed: list[str] = []
    slot = RunSlot(patience=0.05, on_pass=lambda: passed.append("passed"))
    slot.take()
    assert slot.overtake() is False  # polling, not busy: nothing to time
    slot.busy()
    assert slot.overtake() is False  # not long enough yet
    time.sleep(0.06)
    taken = threading.Event()
    thread = threading.Thread(target=lambda: (slot.take(), taken.set()))
    thread.start()
    assert slot.overtake() is True
    assert taken.wait(5)
    thread.join(5)
    assert (slot.overtaken, passed) == (1, ["passed"])
    assert not slot.holds()
    assert slot.step_aside() is False  # overtaken: its own stepping aside is a no-op


def test_released_passes_the_slot_on_for_the_wait() -> None:
    slot = RunSlot()
    run_slot.install(slot)
    try:
        slot.take()
        other = threading.Event()
        thread = threading.Thread(target=lambda: (slot.take(), other.set()))
        thread.start()
        with run_slot.released():
            assert other.wait(5)  # another thread serves meanwhile
        assert not slot.holds()  # and the request goes on outside the slot
        thread.join(5)
        with run_slot.released():  # a thread without the slot has nothing to pass on
            pass
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
