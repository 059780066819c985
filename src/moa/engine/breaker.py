"""A circuit breaker per provider: after N failures in a row, skip it for a cool-down.

A provider that is down makes every call wait for its timeout and retries; with
a breaker, once ``failures`` calls in a row have failed for reasons that say the
provider is unwell (timeouts, refused or reset connections, 5xx, 429), further
calls fail at once with :class:`~moa.errors.CircuitOpenError` for ``cooldown``
seconds, so the other agents carry on without waiting. Then one call is let
through as a trial: its success closes the circuit, its failure opens it for
another cool-down. Errors that say the request was wrong (4xx) do not count.

State is per provider object and per process, shared by every run of a mixture
(the server's requests included); :func:`breaker_states` lists it for metrics.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

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


class CircuitBreaker:
    """The breaker of one provider (see the module docstring)."""

    def __init__(self, provider: str, spec: CircuitSpec) -> None:
        self.provider = provider
        self.spec = spec
        self.failures = 0
        self.skipped = 0
        self.opened_at: float | None = None
        self._trial = False
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        return self.opened_at is not None

    def check(self, model: str) -> None:
        """Raise :class:`CircuitOpenError` unless a call may go now."""
        with self._lock:
            if self.opened_at is None:
                return
            waited = time.monotonic() - self.opened_at
            if waited >= self.spec.cooldown and not self._trial:
                self._trial = True  # one call tries the provider again
                return
            self.skipped += 1
            rest = max(0.0, self.spec.cooldown - waited)
        raise CircuitOpenError(
            f"{self.provider} skipped: its last {self.failures} calls failed; "
            f"it is tried again in {rest:.0f}s",
            provider=self.provider,
            model=model,
        )

    def succeeded(self) -> None:
        with self._lock:
            self.failures, self.opened_at, self._trial = 0, None, False

    def failed(self, error: BaseException) -> None:
        """Count ``error`` if it says the provider is unwell (what a retry would count)."""
        unwell = isinstance(error, ProviderError) and error.retryable
        if not unwell or isinstance(error, EmptyAnswerError):
            with self._lock:
                self._trial = False
            return
        with self._lock:
            self.failures += 1
            if self._trial or self.failures >= self.spec.failures:
                self.opened_at = time.monotonic()
            self._trial = False

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
