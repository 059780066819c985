"""Majority vote (self-consistency) for exact-answer tasks, with synthesis on ties.

The final answers are extracted from the last layer's replies and counted; a
strict winner's reply (the first one with that answer) is the output, at no
extra call. On a tie, or when too few replies state an answer, the aggregator
synthesizes as usual. With ``samples`` this is self-consistency: one model
sampled n times, then voted.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Literal

from pydantic import Field, field_validator

from moa.answers import AnswerKind, extract_answer
from moa.engine.context import RunContext
from moa.engine.references import Reference
from moa.engine.result import AgentResult
from moa.engine.strategy import Strategy, register_strategy
from moa.strategies.common import StrategyOptions, finish, run_layers
from moa.strategies.sliding import aggregate

__all__ = ["VoteOptions", "tally", "vote"]


class VoteOptions(StrategyOptions):
    answer: AnswerKind = "number"
    """What to compare: the final ``number``, a ``choice`` letter, the ``last_line``,
    or the whole ``text``."""
    pattern: str | None = None
    """A regular expression whose last match (its first group, if any) is the answer."""
    min_votes: int = Field(default=2, ge=1)
    """The winner needs at least this many votes (fewer: synthesize instead)."""
    on_tie: Literal["aggregate", "first"] = "aggregate"
    """``aggregate``: the aggregator synthesizes; ``first``: the first tied answer wins."""

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        return value


def tally(references: list[Reference], options: VoteOptions) -> tuple[Counter[str], dict[str, int]]:
    """Votes per answer, and the first reply giving each answer."""
    votes: Counter[str] = Counter()
    first: dict[str, int] = {}
    for index, reference in enumerate(references):
        answer = extract_answer(reference.text, options.answer, options.pattern)
        if answer is None:
            continue
        votes[answer] += 1
        first.setdefault(answer, index)
    return votes, first


def vote(options: VoteOptions) -> Strategy:
    async def run(ctx: RunContext) -> AgentResult:
        references = await run_layers(ctx, options)
        votes, first = tally(references, options)
        ranking = votes.most_common()
        counts = ", ".join(f"{answer!r}: {n}" for answer, n in ranking) or "no answer found"
        note = f"vote over {len(references)} answers: {counts}"
        ctx.notes.append(note)
        if ranking:
            top, top_votes = ranking[0]
            tied = len(ranking) > 1 and ranking[1][1] == top_votes
            if top_votes >= options.min_votes and (not tied or options.on_tie == "first"):
                ctx.notes.append(f"vote: {top!r} wins with {top_votes} of {len(references)}")
                return finish(ctx, references[first[top]].text, name="vote", notes=(note,))
        ctx.notes.append("vote: no clear majority, the aggregator synthesizes")
        return await aggregate(ctx, references, policy=options.context)

    return run


register_strategy(
    "vote",
    vote,
    VoteOptions,
    "majority vote on the extracted final answer (self-consistency); synthesis on ties",
)
