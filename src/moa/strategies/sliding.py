"""Aggregation that never overflows: direct, truncated, or a sliding window over the answers.

The sliding window is Self-MoA-Seq's scheme: the aggregator first synthesizes
a batch of answers, then repeatedly sees its current synthesis plus the next
batch, so any number of answers fits a bounded context. Intermediate
syntheses are extra calls; the last step is the streamed final answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from moa.engine.context import RunContext
from moa.engine.references import Reference
from moa.engine.result import AgentResult
from moa.engine.spec import AgentSpec
from moa.strategies.common import run_extra
from moa.strategies.window import ContextPolicy, fit_for_agent, fits

__all__ = ["aggregate", "sliding_aggregate"]


async def aggregate(
    ctx: RunContext,
    references: Sequence[Reference],
    agent: AgentSpec | None = None,
    *,
    policy: ContextPolicy | None = None,
    instruction: str | None = None,
    layer: int | None = None,
) -> AgentResult:
    """The final answer from ``references``, within ``agent``'s context window."""
    agent = agent or ctx.spec.aggregator
    refs = list(references)
    if policy is not None and not fits(ctx, agent, refs, policy, instruction):
        if policy.overflow == "sliding" and len(refs) > 1:
            ctx.notes.append(
                f"{len(refs)} answers overflow the context window of {agent.model}: "
                "aggregated with a sliding window"
            )
            return await sliding_aggregate(
                ctx, refs, agent, policy=policy, instruction=instruction, layer=layer
            )
        refs = fit_for_agent(ctx, agent, refs, policy, instruction)
    return await ctx.aggregate(refs, agent, layer=layer, instruction=instruction)


def _next_batch(
    ctx: RunContext,
    agent: AgentSpec,
    carried: list[Reference],
    pending: list[Reference],
    batch: int | None,
    policy: ContextPolicy | None,
    instruction: str | None,
) -> list[Reference]:
    """Take the next answers off ``pending``: at most ``batch``, at least one, as many as fit."""
    taken = [pending.pop(0)]
    while pending and (batch is None or len(taken) < batch):
        if not fits(ctx, agent, [*carried, *taken, pending[0]], policy, instruction):
            break
        taken.append(pending.pop(0))
    return taken


async def sliding_aggregate(
    ctx: RunContext,
    references: Sequence[Reference],
    agent: AgentSpec | None = None,
    *,
    batch: int | None = None,
    policy: ContextPolicy | None = None,
    instruction: str | None = None,
    layer: int | None = None,
) -> AgentResult:
    """Aggregate ``batch`` new answers at a time (or as many as fit) over the running synthesis."""
    agent = agent or ctx.spec.aggregator
    step_layer = layer if layer is not None else len(ctx.layers) + 1
    pending = list(references)
    carried: list[Reference] = []
    steps = 0
    while True:
        shown = carried + _next_batch(ctx, agent, carried, pending, batch, policy, instruction)
        shown = fit_for_agent(
            ctx, agent, shown, policy, instruction, label=f"sliding step {steps + 1}"
        )
        if not pending:
            if steps:
                ctx.notes.append(f"sliding window: {steps + 1} aggregation steps")
            return await ctx.aggregate(shown, agent, layer=step_layer, instruction=instruction)
        call = ctx.agent_call(
            agent,
            layer=step_layer,
            index=0,
            role="aggregator",
            references=shown,
            instruction=instruction,
        )
        (result,) = await run_extra(ctx, [call], announce=True)
        steps += 1
        step_layer += 1
        if result.ok and result.output:
            carried = [Reference(result.output)]
        else:
            # Keep the last good synthesis; the answers of this step are lost, not the run.
            ctx.notes.append(f"sliding step {steps} failed ({result.error}); its answers skipped")
