"""The LLM-ranker baseline: a judge picks the best answer instead of synthesizing one."""

from __future__ import annotations

from moa.engine.context import RunContext
from moa.engine.result import AgentResult
from moa.engine.spec import AgentSpec
from moa.engine.strategy import Strategy, register_strategy
from moa.strategies.common import (
    StrategyOptions,
    finish,
    judge_call,
    prompt,
    run_layers,
)
from moa.strategies.judge import parse_ranking
from moa.strategies.sliding import aggregate
from moa.strategies.window import fit_for_agent

__all__ = ["RankOptions", "rank"]


class RankOptions(StrategyOptions):
    judge: AgentSpec | None = None
    """The judge (default: the mixture's aggregator)."""
    instruction: str | None = None
    """Replaces the shipped judging instruction; it must ask for a final "Best: N" line."""


def rank(options: RankOptions) -> Strategy:
    async def run(ctx: RunContext) -> AgentResult:
        references = await run_layers(ctx, options)
        if not references:
            return await aggregate(ctx, references, policy=options.context)
        if len(references) == 1:
            ctx.notes.append("rank: one answer, nothing to judge")
            return finish(ctx, references[0].text, name="rank", layer=len(ctx.layers) + 1)
        judge = options.judge or ctx.spec.aggregator
        instruction = options.instruction or prompt("rank")
        shown = fit_for_agent(ctx, judge, references, options.context, instruction, label="rank")
        call = ctx.agent_call(
            judge,
            layer=len(ctx.layers) + 1,
            index=0,
            role="aggregator",
            references=shown,
            instruction=instruction,
        )
        verdict = await judge_call(ctx, call)
        ranked = parse_ranking(verdict.output or "", len(shown)) if verdict.ok else []
        if ranked:
            choice, note = (
                ranked[0],
                f"rank: the judge picked answer {ranked[0] + 1} of {len(shown)}",
            )
        else:
            reason = verdict.error if not verdict.ok else "no answer number in its reply"
            choice, note = 0, f"rank: judge verdict unusable ({reason}); kept answer 1"
        ctx.notes.append(note)
        return finish(
            ctx,
            references[choice].text,
            base=verdict,
            name="rank",
            notes=(note, f"verdict: {(verdict.output or '').strip()[-200:]}"),
        )

    return run


register_strategy(
    "rank",
    rank,
    RankOptions,
    "LLM-ranker baseline: a judge picks the best answer instead of synthesizing",
)
