"""The ready queue takes turns between callers: one caller's many requests do not all go ahead of another's one."""

from __future__ import annotations

import pytest

from app.serving.fair_queue import FairQueue


def drain(queue: FairQueue[str]) -> list[str]:
    return [queue.popleft() for _ in range(len(queue))]


def test_one_key_is_first_come_first_served() -> None:
    queue: FairQueue[str] = FairQueue()
    for item in ("a1", "a2", "a3"):
        queue.append(item, "a")
    assert (len(queue), bool(queue)) == (3, True)
    assert drain(queue) == ["a1", "a2", "a3"]
    assert (len(queue), bool(queue)) == (0, False)


def test_keys_take_turns_one_item_each() -> None:
    queue: FairQueue[str] = FairQueue()
    for index in range(1, 33):
        queue.append(f"abuser{index}", "abuser")
    queue.append("good", "good")
    queue.append("other", "other")
    assert drain(queue)[:5] == ["abuser1", "good", "other", "abuser2", "abuser3"]


def test_a_key_arriving_later_waits_for_the_keys_whose_turn_has_not_come_yet() -> None:
    queue: FairQueue[str] = FairQueue()
    for index in range(1, 4):
        queue.append(f"a{index}", "a")
        queue.append(f"b{index}", "b")
    assert queue.popleft() == "a1"
    queue.append("c1", "c")  # while a1 is served: ahead of a's next turn, after b's
    assert drain(queue) == ["b1", "c1", "a2", "b2", "a3", "b3"]


def test_a_key_whose_line_emptied_starts_again_at_the_back() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.append("a1", "a")
    queue.append("b1", "b")
    queue.append("b2", "b")
    assert queue.popleft() == "a1"
    queue.append("a2", "a")
    assert drain(queue) == ["b1", "a2", "b2"]


def test_an_empty_queue_raises_index_error_like_a_deque() -> None:
    queue: FairQueue[str] = FairQueue()
    with pytest.raises(IndexError):
        queue.popleft()
