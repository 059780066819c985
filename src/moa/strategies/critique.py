"""Critique step: a critic reviews each answer, and the aggregator sees answers with reviews.

The reviews run concurrently, one per answer, so the step costs one call's
latency. A failed review leaves its answer unreviewed rather than failing the run.
"""

from __future__ import annotations

from moa.engine.context import RunContext
from moa.engine.references import Reference
from moa.engine.result import AgentResult
from moa.engine.spec import AgentSpec
from moa.engine.strategy import Strategy, register_strategy
from moa.strategies.common import StrategyOptions, prompt, run_extra, run_layers
from moa.strategies.sliding import aggregate
from moa.strategies.window import fit_for_agent

__all__ = ["CritiqueOptions", "critique"]


class CritiqueOptions(StrategyOptions):
    critic: AgentSpec | None = None
    """The reviewer (default: the mixture's aggregator)."""
    instruction: str | None = None
    """Replaces the shipped reviewing instruction."""
    aggregate_instruction: str | None = None
    """Replaces the shipped instruction of the aggregator that sees the reviews."""


def reviewed(answer: str, review: str | None) -> str:
    if not review:
        return answer
    return f"{answer.strip()}\n\n[Reviewer's notes on this answer]\n{review.strip()}"


def critique(options: CritiqueOptions) -> Strategy:
    async def run(ctx: RunContext) -> AgentResult:
        references = await run_layers(ctx, options)
        critic = options.critic or ctx.spec.aggregator
        instruction = options.instruction or prompt("critique")
        layer = len(ctx.layers) + 1
        calls = []
        for index, reference in enumerate(references):
            label = f"critique of answer {index + 1}"
            shown = fit_for_agent(
                ctx, critic, [reference], options.context, instruction, label=label
            )
            calls.append(
                ctx.agent_call(
                    critic,
                    layer=layer,
                    index=index,
                    role="aggregator",
                    references=shown,
                    instruction=instruction,
                )
            )
        reviews = await run_extra(ctx, calls, announce=True)
        failed = sum(not r.ok for r in reviews)
        if failed:
            ctx.notes.append(f"critique: {failed} of {len(reviews)} reviews failed")
        with_reviews = [
            Reference(reviewed(ref.text, review.output if review.ok else None), ref.partial)
            for ref, review in zip(references, reviews, strict=True)
        ]
        return await aggregate(
            ctx,
            with_reviews,
            policy=options.context,
            instruction=options.aggregate_instruction or prompt("aggregate_reviewed"),
            layer=layer + 1 if references else layer,
        )

    return run


register_strategy(
    "critique",
    critique,
    CritiqueOptions,
    "a critic reviews each answer; the aggregator sees the answers with their reviews",
)
