"""A lock that serves its waiters in the order they came, and lets a waiter give up.

``threading.Lock`` wakes an arbitrary waiter, so under a steady queue some wait
far longer than others (a local model serving calls one at a time made one of
twelve calls wait 74 s while the median waited 9 s). :class:`Turns` hands the
lock to the longest waiter, and a waiter whose call is cancelled leaves the
line without ever taking it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType

__all__ = ["Turns"]


class Turns:
    """``slots`` holders at a time (1: a lock), handed out first come, first served."""

    def __init__(self, slots: int = 1, *, poll_s: float = 0.05) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self._free = slots
        self._poll_s = poll_s
        self._line: deque[_Ticket] = deque()
        self._changed = threading.Condition()

    @property
    def waiting(self) -> int:
        """How many are waiting for a turn."""
        return len(self._line)

    def longest_wait(self) -> float | None:
        """Seconds the first in line has been waiting; None when nobody waits."""
        with self._changed:
            return time.monotonic() - self._line[0].since if self._line else None

    def acquire(self, give_up: Callable[[], bool] = lambda: False) -> bool:
        """Wait for a turn; False, without one, once ``give_up()`` (checked every poll) is true."""
        ticket = _Ticket()
        with self._changed:
            self._line.append(ticket)
            try:
                while self._line[0] is not ticket or self._free == 0:
                    if give_up():
                        return False
                    self._changed.wait(self._poll_s)
                self._free -= 1
                return True
            finally:
                self._line.remove(ticket)
                self._changed.notify_all()  # the next in line may go, or move up

    def release(self) -> None:
        with self._changed:
            self._free += 1
            self._changed.notify_all()

    def __enter__(self) -> Turns:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


class _Ticket:
    """A place in the line, and when it was taken."""

    __slots__ = ("since",)

    def __init__(self) -> None:
        self.since = time.monotonic()
