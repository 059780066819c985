"""The paper's MoA: every layer sees all answers of the previous one, then one aggregator."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from moa.engine.context import RunContext
from moa.engine.result import AgentResult
from moa.engine.strategy import Strategy, register_strategy
from moa.strategies.common import StrategyOptions, run_layers
from moa.strategies.sliding import aggregate
from moa.strategies.window import ContextPolicy

__all__ = ["LayeredOptions", "layered"]


class LayeredOptions(BaseModel):
    """Options of ``strategy: {type: layered, ...}`` (the default strategy)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    context: ContextPolicy | None = None
    """What to do when references would overflow an agent's context window."""


def layered(options: LayeredOptions) -> Strategy:
    # Only the context policy applies: the paper's MoA has no layer of samples.
    shared = StrategyOptions(context=options.context)

    async def run(ctx: RunContext) -> AgentResult:
        references = await run_layers(ctx, shared)
        return await aggregate(ctx, references, policy=options.context)

    return run


register_strategy(
    "layered",
    layered,
    LayeredOptions,
    "layers of proposers, then one aggregator (default)",
)
