"""A circuit breaker per provider: after N failures in a row, skip it for a cool-down.

A provider that is down makes every call wait for its timeout and retries; with
a breaker, once ``failures`` calls in a row have failed for reasons that say the
provider is unwell (timeouts, refused or reset connections, 5xx, 429), further
calls fail at once with :class:`~moa.errors.CircuitOpenError` for ``cooldown``
seconds, so the other agents carry on without waiting. Then one call is let
through as a trial: its success closes the circuit, its failure opens it for
another cool-down. Errors that say the request was wrong (4xx) do not count.

"In a row" is in the order the calls (each attempt) were sent, not the order they
finished: :meth:`CircuitBreaker.check` hands out each attempt's place, and a
verdict waits for those of the attempts sent before it. Counted as they finish,
calls sent together to a provider that fails some of them at once (a 500 in a
millisecond, where an answer takes a while) made "failures in a row" out of
the fast failures alone, and opened the circuit of a provider that answers
nine calls in ten. An attempt counts as a success once its first token is in
(a long answer does not hold back the count); one that ends with no verdict
(cancelled) gives its place back.

State is per provider object and per process, shared by every run of a mixture
(the server's requests included); :func:`breaker_states` lists it for metrics.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from moa.engine.spec import CircuitSpec
from moa.errors import CircuitOpenError, EmptyAnswerError, ProviderError
from moa.providers.base import Provider

__all__ = ["BreakerState", "CircuitBreaker", "breaker_for", "breaker_states"]

_BREAKERS: weakref.WeakKeyDictionary[Provider, CircuitBreaker] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


@dataclass(frozen=True)
class BreakerState:
    provider: str
    open: bool
    failures: int
    """Failures in a row so far."""
    skipped: int
    """Calls refused while open, since the process started."""


Verdict = Literal["ok", "failed", "neutral"]

MAX_WAITING = 1_000
"""Verdicts that may wait for an earlier ticket's; past that, the tickets they wait for are
passed over (an attempt never reported must not stop the count for good)."""


class CircuitBreaker:
    """The breaker of one provider (see the module docstring).

    An attempt asks :meth:`check`, which raises while the circuit is open and
    otherwise returns the attempt's ticket (its place in the order of sending);
    the attempt then reports :meth:`succeeded`, :meth:`failed` or
    :meth:`released` with that ticket. The first verdict of a ticket counts,
    later ones are ignored. Without a ticket, a verdict is that of an attempt
    sent and ended just now.
    """

    def __init__(self, provider: str, spec: CircuitSpec) -> None:
        self.provider = provider
        self.spec = spec
        self.failures = 0
        """Failures in a row, among the attempts whose verdicts have been counted."""
        self.skipped = 0
        self.opened_at: float | None = None
        self._trial: int | None = None
        self._sent = 0
        """The next ticket."""
        self._counted = 0
        """The first ticket not counted yet (still in flight, or after one that is)."""
        self._verdicts: dict[int, Verdict] = {}
        """Verdicts of tickets not counted yet, waiting for those sent before them."""
        self._floor = 0
        """Verdicts of tickets below this count for nothing (a trial answered after them)."""
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        return self.opened_at is not None

    def check(self, model: str) -> int:
        """The ticket of an attempt that may go now; raise :class:`CircuitOpenError` if none."""
        with self._lock:
            if self.opened_at is None:
                return self._ticket()
            waited = time.monotonic() - self.opened_at
            if waited >= self.spec.cooldown and self._trial is None:
                self._trial = self._ticket()  # one call tries the provider again
                return self._trial
            self.skipped += 1
            rest = max(0.0, self.spec.cooldown - waited)
        raise CircuitOpenError(
            f"{self.provider} skipped: its last {self.failures} calls failed; "
            f"it is tried again in {rest:.0f}s",
            provider=self.provider,
            model=model,
        )

    def succeeded(self, ticket: int | None = None) -> None:
        """The attempt of ``ticket`` answered (or has begun to)."""
        self._verdict(ticket, "ok")

    def failed(self, error: BaseException, ticket: int | None = None) -> None:
        """The attempt of ``ticket`` failed; ``error`` counts if it says the provider is unwell
        (what a retry would count)."""
        unwell = isinstance(error, ProviderError) and error.retryable
        counts = unwell and not isinstance(error, EmptyAnswerError)
        self._verdict(ticket, "failed" if counts else "neutral")

    def released(self, ticket: int) -> None:
        """The attempt of ``ticket`` ended with no verdict (it was cancelled)."""
        self._verdict(ticket, "neutral")

    def _ticket(self) -> int:
        self._sent += 1
        return self._sent - 1

    def _verdict(self, ticket: int | None, verdict: Verdict) -> None:
        with self._lock:
            if ticket is None:
                ticket = self._ticket()
            if ticket < self._counted or ticket in self._verdicts:
                return  # this attempt has had its verdict
            if ticket == self._trial:
                self._trial = None
                if self.opened_at is not None:  # the trial decides at once
                    if verdict == "ok":
                        self.failures, self.opened_at = 0, None
                        self._floor = ticket
                    elif verdict == "failed":
                        self.opened_at = time.monotonic()
            self._verdicts[ticket] = verdict
            if len(self._verdicts) > MAX_WAITING:
                self._counted = min(self._verdicts)
            while self._counted in self._verdicts:
                self._count(self._counted, self._verdicts.pop(self._counted))
                self._counted += 1

    def _count(self, ticket: int, verdict: Verdict) -> None:
        if ticket < self._floor or verdict == "neutral":
            return
        if verdict == "ok":
            self.failures, self.opened_at = 0, None
            return
        self.failures += 1
        if self.opened_at is None and self.failures >= self.spec.failures:
            self.opened_at = time.monotonic()

    def state(self) -> BreakerState:
        with self._lock:
            return BreakerState(self.provider, self.open, self.failures, self.skipped)


def breaker_for(provider: Provider, spec: CircuitSpec) -> CircuitBreaker:
    """The breaker of ``provider`` (made with ``spec`` the first time it is asked for)."""
    with _LOCK:
        breaker = _BREAKERS.get(provider)
        if breaker is None:
            breaker = _BREAKERS[provider] = CircuitBreaker(provider.name, spec)
        return breaker


def breaker_states() -> Iterator[BreakerState]:
    """The state of every provider's breaker in this process."""
    with _LOCK:
        breakers = list(_BREAKERS.values())
    for breaker in breakers:
        yield breaker.state()
