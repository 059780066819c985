"""Time budgets of one agent's call: observed latencies and hedged requests.

A hedged call sends a duplicate request to a backup model once the agent's own
call has been slow for longer than a fixed time or a percentile of that model's
observed latencies. Which call wins depends on what the caller needs: a
proposer's answer is used whole, so the first call to *finish* wins; the final
answer is streamed to the user and cannot be taken back, so there the first call
to *write a token* wins. The loser is stopped, and its cost is still accounted.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal

from moa.engine.call import AgentCall, CallProgress, Hedge, call_agent, stopped_result
from moa.engine.result import AgentResult

__all__ = ["LatencyHistory", "Race", "hedge_delay", "run_call"]

Race = Literal["finish", "first_token"]


class LatencyHistory:
    """Recent latencies per model id (whole calls and first tokens), newest ``size`` kept."""

    def __init__(self, size: int = 200) -> None:
        self._samples: dict[tuple[str, Race], deque[float]] = defaultdict(
            lambda: deque(maxlen=size)
        )

    def observe(self, result: AgentResult) -> None:
        """Learn from a finished call; failed and stopped calls say nothing about latency."""
        if not result.ok or result.partial:
            return
        self.add(result.model, "finish", result.latency_s)
        if result.ttft_s is not None:
            self.add(result.model, "first_token", result.ttft_s)

    def add(self, model_id: str, race: Race, seconds: float) -> None:
        self._samples[model_id, race].append(seconds)

    def count(self, model_id: str, race: Race = "finish") -> int:
        return len(self._samples.get((model_id, race), ()))

    def percentile(self, model_id: str, q: float, race: Race = "finish") -> float | None:
        """The ``q``-th percentile (0-100, nearest rank) of the observed seconds, if any."""
        samples = sorted(self._samples.get((model_id, race), ()))
        if not samples:
            return None
        rank = max(1, -(-len(samples) * q // 100))
        return samples[int(rank) - 1]


def hedge_delay(hedge: Hedge, model_id: str, history: LatencyHistory, race: Race) -> float | None:
    """Seconds to wait before the backup starts (``None``: no hedge for this call)."""
    spec = hedge.spec
    if spec.percentile is not None and history.count(model_id, race) >= spec.min_samples:
        return history.percentile(model_id, spec.percentile, race)
    return spec.after


async def run_call(
    call: AgentCall,
    *,
    history: LatencyHistory,
    on_delta: Callable[[str], None] | None = None,
    progress: CallProgress | None = None,
    race: Race = "finish",
    on_extra: Callable[[AgentResult], None] = lambda _: None,
) -> AgentResult:
    """Run ``call`` (hedged if it has a hedge) and learn its latency.

    The returned result is the winner's; the loser's result goes to
    ``on_extra``. If this coroutine is cancelled, the primary's text stays in
    ``progress`` and a running backup is stopped and passed to ``on_extra``.
    """
    progress = progress or CallProgress()
    delay = None if call.hedge is None else hedge_delay(call.hedge, call.model_id, history, race)
    if call.hedge is None or delay is None:
        result = await call_agent(call, on_delta=on_delta, progress=progress)
    else:
        result = await _hedged(call, call.hedge, delay, on_delta, progress, race, on_extra, history)
    history.observe(result)
    return result


async def _hedged(
    call: AgentCall,
    hedge: Hedge,
    delay: float,
    on_delta: Callable[[str], None] | None,
    progress: CallProgress,
    race: Race,
    on_extra: Callable[[AgentResult], None],
    history: LatencyHistory,
) -> AgentResult:
    calls = [call, hedge.backup]
    progresses = [progress, CallProgress()]
    tasks: list[asyncio.Task[AgentResult]] = []
    leader: list[int] = []
    committed = asyncio.Event()

    def forward(index: int) -> Callable[[str], None] | None:
        if race == "finish":
            # Only the primary's text is shown live; the winner's result says what counted.
            return on_delta if index == 0 else None

        def deliver(text: str) -> None:
            if not leader:
                leader.append(index)
                committed.set()
            if leader[0] == index and on_delta is not None:
                on_delta(text)

        return deliver

    def start(index: int, target: AgentCall) -> None:
        coroutine = call_agent(target, on_delta=forward(index), progress=progresses[index])
        tasks.append(asyncio.create_task(coroutine))

    start(0, call)
    committed_wait = asyncio.create_task(committed.wait())
    try:
        first = {tasks[0], committed_wait} if race == "first_token" else {tasks[0]}
        done, _ = await asyncio.wait(first, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        if done:
            return await tasks[0]
        elapsed = time.perf_counter() - progress.started
        backup = hedge.backup
        if call.deadline is not None:
            backup = replace(backup, deadline=max(call.deadline - elapsed, 0.0))
        start(1, backup)
        winner = await _winner(tasks, committed_wait, race, leader)
        loser = 1 - winner
        if not tasks[loser].done():
            tasks[loser].cancel()
            await asyncio.gather(tasks[loser], return_exceptions=True)
            # The slow call's time so far bounds its latency from below: keep it in the history.
            waited = time.perf_counter() - progresses[loser].started
            history.add(calls[loser].model_id, race, waited)
            reason = f"hedge: {calls[winner].model_id} won"
            on_extra(stopped_result(calls[loser], progresses[loser], reason, keep_text=False))
        else:
            on_extra(tasks[loser].result())
        result = await tasks[winner]
        note = (
            f"hedge: backup {hedge.backup.model_id} started after {elapsed:.2f}s; "
            f"{'the backup' if winner else 'the primary'} won"
        )
        return replace(result, notes=(*result.notes, note))
    finally:
        committed_wait.cancel()
        if len(tasks) > 1 and not tasks[1].done():
            tasks[1].cancel()
            await asyncio.gather(tasks[1], return_exceptions=True)
            reason = "the call was stopped"
            on_extra(stopped_result(calls[1], progresses[1], reason, keep_text=False))
        if not tasks[0].done():
            tasks[0].cancel()
            await asyncio.gather(tasks[0], return_exceptions=True)


async def _winner(
    tasks: list[asyncio.Task[AgentResult]],
    committed_wait: asyncio.Task[bool],
    race: Race,
    leader: list[int],
) -> int:
    """Index of the winning task (in a ``first_token`` race it may still be writing)."""
    pending: set[asyncio.Future[Any]] = set(tasks)
    if race == "first_token":
        pending.add(committed_wait)
    while True:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if committed_wait in done:
            return leader[0]
        for index, task in enumerate(tasks):
            if task in done and task.result().ok:
                return index
        if all(task.done() for task in tasks):
            return 0
