"""The time left of a long run, paced by the items that cost time.

Items answered from the call cache (a resumed run, calls another system already
made) arrive at once. Counted like the others they would make the estimate far
too short, so an item that arrives within ``CACHED_GAP_S`` of the one before it
is taken as free, and the pace is the mean gap before the others.
"""

from __future__ import annotations

import time

__all__ = ["CACHED_GAP_S", "PacedEta"]

CACHED_GAP_S = 0.2


class PacedEta:
    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """Forget the pace so far (a new phase whose items cost differently)."""
        self.last = time.monotonic()
        self.paid = 0
        self.paid_s = 0.0

    def arrived(self) -> None:
        """One item is done."""
        now = time.monotonic()
        if now - self.last >= CACHED_GAP_S:
            self.paid, self.paid_s = self.paid + 1, self.paid_s + now - self.last
        self.last = now

    def left(self, remaining: int) -> str:
        """E.g. "12 min"; "?" until an item has cost time."""
        if not self.paid:
            return "?"
        return f"{self.paid_s / self.paid * remaining / 60:.0f} min"
