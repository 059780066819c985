"""Turns: a lock handed to its waiters in the order they came."""

from __future__ import annotations

import threading
import time

import pytest

from moa.providers.turns import Turns


def queue_up(turns: Turns, n: int, order: list[int], hold_s: float = 0.0) -> list[threading.Thread]:
    """``n`` threads that line up one after another, each noting its turn in ``order``."""
    threads = []
    for index in range(n):

        def take(index: int = index) -> None:
            with turns:
                order.append(index)
                time.sleep(hold_s)

        thread = threading.Thread(target=take)
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 5
        while turns.waiting < index + 1 and time.monotonic() < deadline:
            time.sleep(0.001)  # in line before the next one comes
    return threads


def test_waiters_get_their_turns_in_the_order_they_came() -> None:
    turns = Turns(poll_s=0.01)
    order: list[int] = []
    turns.acquire()
    threads = queue_up(turns, 8, order)
    assert turns.waiting == 8
    turns.release()
    for thread in threads:
        thread.join(5)
    assert order == list(range(8)) and turns.waiting == 0


def test_a_waiter_that_gives_up_leaves_the_line_without_a_turn() -> None:
    turns = Turns(poll_s=0.01)
    turns.acquire()
    leave = threading.Event()
    result: list[bool] = []
    quitter = threading.Thread(target=lambda: result.append(turns.acquire(leave.is_set)))
    quitter.start()
    order: list[int] = []
    threads = queue_up(turns, 2, order)  # behind the quitter
    leave.set()
    quitter.join(5)
    assert result == [False] and turns.waiting == 2
    turns.release()
    for thread in threads:
        thread.join(5)
    assert order == [0, 1]


def test_slots_let_that_many_hold_it_at_once() -> None:
    turns = Turns(2, poll_s=0.01)
    assert turns.acquire() and turns.acquire()
    order: list[int] = []
    threads = queue_up(turns, 3, order, hold_s=0.05)
    assert order == []
    turns.release()  # one slot: the first in line, then the next as each is done
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2]
    turns.release()


def test_slots_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Turns(0)


def test_longest_wait_is_how_long_the_first_in_line_has_waited() -> None:
    turns = Turns(poll_s=0.01)
    assert turns.longest_wait() is None
    turns.acquire()
    order: list[int] = []
    threads = queue_up(turns, 2, order)
    time.sleep(0.05)
    waited = turns.longest_wait()
    assert waited is not None and waited >= 0.05
    turns.release()
    for thread in threads:
        thread.join(5)
    assert turns.longest_wait() is None and order == [0, 1]
