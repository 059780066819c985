"""The paper's MoA: every layer sees all answers of the previous one, then one aggregator."""

from __future__ import annotations

from typing import Any

from moa.engine.context import RunContext
from moa.engine.references import Reference
from moa.engine.result import AgentResult
from moa.engine.strategy import Strategy, register_strategy
from moa.strategies.early_exit import exit_early

__all__ = ["layered"]


async def layered(ctx: RunContext) -> AgentResult:
    references: list[Reference] = []
    for number, layer in enumerate(ctx.spec.layers, start=1):
        result = await ctx.run_layer(number, layer, references)
        references = ctx.references_of(result.agents)
        if exit_early(ctx, result, remaining=len(ctx.spec.layers) - number):
            break
    return await ctx.aggregate(references)


def _build(_: Any) -> Strategy:
    return layered


register_strategy("layered", _build, summary="layers of proposers, then one aggregator (default)")
