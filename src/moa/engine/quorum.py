"""k-of-n quorum and layer deadlines: a layer may go on before all of its agents are done.

The agents still running when ``quorum`` of them have answered, or when the
layer's ``deadline`` passes, are really stopped (their requests are cancelled).
What they wrote so far is kept as a partial answer or dropped, per ``late``;
either way the layer's notes and each stopped result say what happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any

from moa.engine.call import AgentCall, CallProgress, stopped_result
from moa.engine.result import AgentResult
from moa.engine.spec import LayerSpec

__all__ = ["gather_layer", "needs_quorum"]

RunAgent = Callable[[AgentCall, CallProgress], Coroutine[Any, Any, AgentResult]]


def needs_quorum(spec: LayerSpec) -> bool:
    """Whether the layer may stop agents early (else it simply waits for all of them)."""
    quorum_below_all = spec.quorum is not None and spec.quorum < len(spec.agents)
    return quorum_below_all or spec.deadline is not None


async def gather_layer(
    calls: Sequence[AgentCall],
    spec: LayerSpec,
    run: RunAgent,
    record: Callable[[AgentResult], None],
) -> tuple[list[AgentResult], tuple[str, ...]]:
    """Run ``calls`` concurrently until the quorum or the deadline; results in call order.

    ``run`` records the calls that end by themselves; the stopped ones are
    passed to ``record`` here. Returns the results and the layer's notes.
    """
    if spec.late == "partial":
        # Only a streamed call has text to keep when it is stopped.
        calls = [replace(call, stream=True) for call in calls]
    loop = asyncio.get_running_loop()
    started = loop.time()
    progresses = [CallProgress() for _ in calls]
    tasks = [asyncio.create_task(run(c, p)) for c, p in zip(calls, progresses, strict=True)]
    needed = spec.quorum or len(calls)
    pending: set[asyncio.Task[AgentResult]] = set(tasks)
    answered = 0
    reason: str | None = None
    try:
        while pending and answered < needed:
            timeout = None
            if spec.deadline is not None:
                timeout = max(0.0, started + spec.deadline - loop.time())
            done, pending = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                reason = f"layer deadline of {spec.deadline:g}s passed"
                break
            answered += sum(1 for task in done if task.result().ok)
        if pending and reason is None:
            reason = f"quorum of {needed} of {len(calls)} reached"
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    results: list[AgentResult] = []
    stopped: list[str] = []
    for task, call, progress in zip(tasks, calls, progresses, strict=True):
        if not task.cancelled():
            results.append(task.result())
            continue
        assert reason is not None
        result = stopped_result(call, progress, reason, keep_text=spec.late == "partial")
        record(result)
        results.append(result)
        stopped.append(call.label)
    if not stopped:
        return results, ()
    fate = "their text kept as partial answers" if spec.late == "partial" else "cancelled"
    elapsed = loop.time() - started
    note = f"{reason} after {elapsed:.2f}s; stopped {', '.join(stopped)} ({fate})"
    return results, (note,)
