"""Sparse MoA: after each layer a judge keeps the top-k answers, and may end the run early.

The next layer (and the final aggregator) sees only the kept answers, which
keeps prompts short and weak answers out. When the judge says the best answer
needs no more revision, the remaining layers are skipped.
"""

from __future__ import annotations

from pydantic import Field

from moa.engine.context import RunContext
from moa.engine.references import Reference
from moa.engine.result import AgentResult, LayerResult
from moa.engine.spec import AgentSpec
from moa.engine.strategy import Strategy, register_strategy
from moa.strategies.common import StrategyOptions, prompt, run_extra, run_layers
from moa.strategies.judge import parse_ranking, parse_stop
from moa.strategies.sliding import aggregate
from moa.strategies.window import fit_for_agent

__all__ = ["SparseOptions", "sparse"]


class SparseOptions(StrategyOptions):
    keep: int = Field(default=2, ge=1)
    """How many answers of each layer the next one sees (top-k)."""
    judge: AgentSpec | None = None
    """The judge (default: the mixture's aggregator)."""
    early_stop: bool = True
    """Skip the remaining layers when the judge says the best answer is final."""
    instruction: str | None = None
    """Replaces the shipped selection instruction (``{keep}`` is filled in)."""


def sparse(options: SparseOptions) -> Strategy:
    async def select(
        ctx: RunContext, number: int, references: list[Reference]
    ) -> tuple[list[Reference], bool]:
        judge = options.judge or ctx.spec.aggregator
        instruction = (options.instruction or prompt("select")).replace(
            "{keep}", str(min(options.keep, len(references)))
        )
        shown = fit_for_agent(
            ctx,
            judge,
            references,
            options.context,
            instruction,
            label=f"sparse judge after layer {number}",
        )
        call = ctx.agent_call(
            judge,
            layer=number,
            index=len(ctx.layers[-1].agents),
            role="aggregator",
            references=shown,
            instruction=instruction,
        )
        (verdict,) = await run_extra(ctx, [call])
        ranked = parse_ranking(verdict.output or "", len(shown)) if verdict.ok else []
        if not ranked:
            reason = verdict.error if not verdict.ok else "no answer numbers in its reply"
            ctx.notes.append(f"layer {number}: judge verdict unusable ({reason}); kept the first")
            ranked = list(range(len(shown)))
        kept = ranked[: options.keep]
        ctx.notes.append(
            f"layer {number}: kept answers {', '.join(str(i + 1) for i in kept)} "
            f"of {len(references)}"
        )
        stop = options.early_stop and verdict.ok and parse_stop(verdict.output or "")
        return [references[i] for i in kept], stop

    async def run(ctx: RunContext) -> AgentResult:
        async def after(
            number: int, _: LayerResult, references: list[Reference], last: bool
        ) -> tuple[list[Reference], bool]:
            may_stop = options.early_stop and not last and bool(references)
            if len(references) <= options.keep and not may_stop:
                return references, False
            refs, stop = await select(ctx, number, references)
            return refs, stop and not last

        references = await run_layers(ctx, options, after)
        return await aggregate(ctx, references, policy=options.context)

    return run


register_strategy(
    "sparse",
    sparse,
    SparseOptions,
    "a judge keeps the top-k answers of each layer and may end the run early (Sparse MoA)",
)
