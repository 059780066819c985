"""Replicated aggregators whose syntheses are aggregated again.

After the proposer layers, ``depth`` stages of several aggregators each
synthesize what the stage before produced; the mixture's aggregator then
writes the final answer from the last stage's syntheses. The replicas are
different models, or samples of one (``replicas: n`` of the aggregator).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from moa.engine.context import RunContext
from moa.engine.references import Reference
from moa.engine.result import AgentResult
from moa.engine.spec import AgentSpec
from moa.engine.strategy import Strategy, register_strategy
from moa.errors import AggregationError
from moa.strategies.common import StrategyOptions, run_extra, run_layers
from moa.strategies.sliding import aggregate
from moa.strategies.window import fit_for_agent

__all__ = ["ReaggregateOptions", "reaggregate"]


class ReaggregateOptions(StrategyOptions):
    aggregators: list[AgentSpec] = Field(default_factory=list)
    """The replicated aggregators of every stage (default: ``replicas`` of the aggregator)."""
    replicas: int = Field(default=3, ge=1, le=32)
    """With no ``aggregators`` given: this many samples of the mixture's aggregator."""
    depth: int = Field(default=1, ge=1, le=8)
    """Stages of replicated aggregators before the final one."""
    replica_temperature: float | None = Field(default=0.7, ge=0.0, le=2.0)
    """Temperature of the sampled replicas (only when ``aggregators`` is not given)."""

    @model_validator(mode="after")
    def _replicas_or_aggregators(self) -> ReaggregateOptions:
        if self.aggregators and "replicas" in self.model_fields_set:
            raise ValueError("give either aggregators or replicas, not both")
        return self


def _replicas(ctx: RunContext, options: ReaggregateOptions) -> list[AgentSpec]:
    if options.aggregators:
        return list(options.aggregators)
    base = ctx.spec.aggregator
    update = (
        {} if options.replica_temperature is None else {"temperature": options.replica_temperature}
    )
    return [
        base.model_copy(
            update={**update, "seed": (base.seed or 0) + i, "name": f"aggregator {i + 1}"}
        )
        for i in range(options.replicas)
    ]


def reaggregate(options: ReaggregateOptions) -> Strategy:
    async def run(ctx: RunContext) -> AgentResult:
        references = await run_layers(ctx, options)
        replicas = _replicas(ctx, options)
        layer = len(ctx.layers) + 1
        for stage in range(1, options.depth + 1):
            calls = []
            for index, agent in enumerate(replicas):
                shown = fit_for_agent(
                    ctx, agent, references, options.context, label=f"re-aggregation stage {stage}"
                )
                calls.append(
                    ctx.agent_call(
                        agent, layer=layer, index=index, role="aggregator", references=shown
                    )
                )
            results = await run_extra(ctx, calls, announce=True)
            syntheses = [Reference(r.output or "") for r in results if r.ok]
            if not syntheses:
                errors = "; ".join(f"{r.agent}: {r.error}" for r in results)
                raise AggregationError(
                    f"every aggregator of re-aggregation stage {stage} failed: {errors}"
                )
            references = syntheses
            layer += 1
        return await aggregate(ctx, references, policy=options.context, layer=layer)

    return run


register_strategy(
    "reaggregate",
    reaggregate,
    ReaggregateOptions,
    "several aggregators synthesize in parallel; a final aggregator re-aggregates (depth stages)",
)
