"""The time left of a long run, paced by the items that cost time.

Items answered from the call cache (a resumed run, calls another system already
made) arrive at once. Counted like the others they would make the estimate far
too short, so an item that arrives within ``CACHED_GAP_S`` of the one before it
is taken as free, and the pace is the mean gap before the others. The first such
gap also holds the start (models loading, and with several items in flight the
time until the first of them ends, which later ones overlap), so once a second
item has cost time the pace leaves the first out.
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
        self.first_s = 0.0

    def arrived(self) -> None:
        """One item is done."""
        now = time.monotonic()
        gap = now - self.last
        if gap >= CACHED_GAP_S:
            if not self.paid:
                self.first_s = gap
            self.paid, self.paid_s = self.paid + 1, self.paid_s + gap
        self.last = now

    def left(self, remaining: int) -> str:
        """E.g. "12 min"; "?" until an item has cost time."""
        if not self.paid:
            return "?"
        later = self.paid - 1
        pace = (self.paid_s - self.first_s) / later if later else self.paid_s
        return f"{pace * remaining / 60:.0f} min"
