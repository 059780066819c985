"""What a front door knows of one run, collected from its events as they pass.

A :class:`RunCapture` watches the events of :meth:`Mixture.astream
<moa.engine.mixture.Mixture.astream>` (it only keeps references to the
engine's frozen results) and, once the run ends, answered, failed or
cancelled, becomes a :class:`FinishedRun`. Turning that into rows or spans
is left to a background thread (:mod:`moa.history.writer`), so a request
pays for a few list appends, never for serialising or writing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from moa.engine.events import AgentDone, AgentFailed, Done, Event
from moa.engine.result import AgentResult, Result
from moa.engine.spec import MixtureSpec
from moa.types import Message

__all__ = ["FinishedRun", "RunCapture", "RunSource"]

RunSource = Literal["cli", "chat", "server", "replay", "eval"]


@dataclass(frozen=True)
class FinishedRun:
    """One run as it ended: the conversation, every call made, the result or the error."""

    id: str
    source: RunSource
    spec: MixtureSpec
    messages: tuple[Message, ...]
    calls: tuple[AgentResult, ...]
    """Every call that finished, in the order they finished (failed ones included)."""
    result: Result | None
    error: str | None
    cancelled: bool
    started_at: float
    latency_s: float
    trace_id: str
    ended_at: float = 0.0
    """Wall-clock time (Unix seconds) the run was over for its caller."""
    replay_of: str | None = None
    setup: Mapping[str, Any] | None = None
    """How the mixture reached its models (``providers:``/``local:`` of its config, keys left
    out), stored with the mixture so that a replay can run it again."""
    span: object | None = field(default=None, repr=False, compare=False)
    """The live root span of the run's trace, when tracing is on (see :mod:`moa.tracing`)."""

    @property
    def failures(self) -> int:
        return sum(1 for call in self.calls if not call.ok) + (1 if self.error else 0)


class RunCapture:
    """Collects one run's calls from its events; :meth:`finish` ends it."""

    def __init__(
        self,
        spec: MixtureSpec,
        messages: tuple[Message, ...],
        *,
        source: RunSource,
        trace_id: str | None = None,
        replay_of: str | None = None,
        setup: Mapping[str, Any] | None = None,
        span: object | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.spec = spec
        self.messages = messages
        self.source = source
        self.trace_id = trace_id or uuid.uuid4().hex
        self.replay_of = replay_of
        self.setup = setup
        self.span = span
        self.calls: list[AgentResult] = []
        self.result: Result | None = None
        self._started = time.time()
        self._clock = time.perf_counter()

    def observe(self, event: Event) -> None:
        """Keep what ``event`` tells about the run (call it with every event)."""
        if isinstance(event, AgentDone | AgentFailed):
            self.calls.append(event.result)
        elif isinstance(event, Done):
            self.result = event.result

    def finish(self, *, error: BaseException | str | None = None) -> FinishedRun:
        """The run as it ended; with neither a result nor an error it was cancelled."""
        if isinstance(error, BaseException):
            error = f"{type(error).__name__}: {error}"
        result = self.result
        return FinishedRun(
            id=self.id,
            source=self.source,
            spec=self.spec,
            messages=self.messages,
            calls=tuple(self.calls),
            result=result,
            error=error,
            cancelled=result is None and error is None,
            started_at=self._started,
            latency_s=result.latency_s if result else time.perf_counter() - self._clock,
            trace_id=result.trace_id if result else self.trace_id,
            ended_at=time.time(),
            replay_of=self.replay_of,
            setup=self.setup,
            span=self.span,
        )
