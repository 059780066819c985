"""Self-MoA: one model sampled several times, its answers aggregated; and its sliding variant.

``self-moa`` aggregates all samples at once. ``self-moa-seq`` aggregates them
``window`` at a time over a running synthesis (Self-MoA-Seq), so any number
of samples fits a bounded context. ``roles`` is the same shape with one role
prompt per sample, for diversity from a single model.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from moa.engine.context import RunContext
from moa.engine.result import AgentResult
from moa.engine.strategy import Strategy, register_strategy
from moa.strategies.common import StrategyOptions, role_names, run_layers
from moa.strategies.sliding import aggregate, sliding_aggregate

__all__ = ["RolesOptions", "SelfMoAOptions", "SelfMoASeqOptions", "self_moa"]


class SelfMoAOptions(StrategyOptions):
    samples: int | None = Field(default=4, ge=1, le=64)


class SelfMoASeqOptions(SelfMoAOptions):
    samples: int | None = Field(default=6, ge=1, le=64)
    window: int = Field(default=3, ge=1)
    """New samples the aggregator sees per step, next to its running synthesis."""


class RolesOptions(StrategyOptions):
    samples: int | None = Field(default=None, ge=1, le=64)
    roles: list[str] = Field(default_factory=role_names)

    @model_validator(mode="after")
    def _roles_given(self) -> RolesOptions:
        if not self.roles:
            raise ValueError("roles: give at least one role")
        return self


def self_moa(options: StrategyOptions) -> Strategy:
    """Samples (and any configured layers), then one aggregation, or a sliding one."""
    window = options.window if isinstance(options, SelfMoASeqOptions) else None

    async def run(ctx: RunContext) -> AgentResult:
        references = await run_layers(ctx, options)
        if window is not None:
            return await sliding_aggregate(ctx, references, batch=window, policy=options.context)
        return await aggregate(ctx, references, policy=options.context)

    return run


register_strategy(
    "self-moa",
    self_moa,
    SelfMoAOptions,
    "n samples of one model (distinct seeds/temperatures), aggregated",
)
register_strategy(
    "self-moa-seq",
    self_moa,
    SelfMoASeqOptions,
    "Self-MoA with a sliding window: the synthesis plus `window` new samples per step",
)
register_strategy(
    "roles",
    self_moa,
    RolesOptions,
    "one model under several role prompts (shipped presets or your own), aggregated",
)
