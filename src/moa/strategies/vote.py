"""Majority vote (self-consistency) for exact-answer tasks, with synthesis on ties.

The final answers are extracted from the last layer's replies and counted; a
strict winner's reply (the first one with that answer) is the output, at no
extra call. On a tie, or when too few replies state an answer, the aggregator
synthesizes as usual. With ``samples`` this is self-consistency: one model
sampled n times, then voted.

``answer: auto`` reads the kind of answer from the request (see
:mod:`moa.question_kind`): a number or a lettered choice is voted on; a request
for code that shows worked examples gets the sample whose code runs them right
(:mod:`moa.strategies.code_check`), when ``auto_votes`` lists ``code``; any
other request gets the first sample's reply alone, one call, since replies that
can be neither counted nor checked cannot be voted on. ``adaptive`` draws the samples
in two waves: a majority's worth first, the rest only when the first wave leaves
the winner open. The outcome is the full vote's (a winner ahead by more than the
samples left cannot be overtaken), at fewer calls when the first answers agree.
A smaller ``first_wave`` (e.g. the greedy answer and one sample) stops on agreement
alone: cheaper and quicker, at the risk that the samples not drawn would have outvoted it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Literal

from pydantic import Field, field_validator, model_validator

from moa.answers import AnswerKind, extract_answer
from moa.code_examples import code_examples
from moa.engine.context import RunContext
from moa.engine.references import Reference
from moa.engine.result import AgentResult, LayerResult
from moa.engine.spec import AgentSpec, LayerSpec
from moa.engine.strategy import Strategy, register_strategy
from moa.question_kind import QuestionKind, last_user_text, question_kind
from moa.strategies.code_check import checked_code
from moa.strategies.common import StrategyOptions, finish, run_layers, sample_layer
from moa.strategies.program_vote import ProgramAnswer, program_text, samples_and_program
from moa.strategies.sliding import aggregate

__all__ = ["VoteOptions", "tally", "vote"]


class VoteOptions(StrategyOptions):
    answer: AnswerKind | Literal["auto"] = "number"
    """What to compare: the final ``number``, a ``choice`` letter, the ``last_line``,
    or the whole ``text``; ``auto``: a number or a choice as the request asks, and for
    any other request the first sample's reply alone (needs ``samples``)."""
    pattern: str | None = None
    """A regular expression whose last match (its first group, if any) is the answer."""
    min_votes: int = Field(default=2, ge=1)
    """The winner needs at least this many votes (fewer: synthesize instead)."""
    on_tie: Literal["aggregate", "first"] = "aggregate"
    """``aggregate``: the aggregator synthesizes; ``first``: the first tied answer wins."""
    auto_votes: tuple[QuestionKind, ...] = ("number", "choice")
    """With ``answer: auto``, the kinds of request that are voted on (``code``: checked on
    the request's worked examples, in the sandbox); any other request gets the first
    sample's reply alone."""
    check_timeout: float = Field(default=10.0, gt=0, le=300)
    """Seconds model-written code may run (a sample's code on a code request's examples,
    the program of ``program_votes``) before it is killed."""
    program_votes: float = Field(default=0.0, ge=0, le=64)
    """With ``samples`` and a ``number`` answer: one more call writes a Python program that
    prints the answer, run in the sandbox; what it prints counts as this many votes
    (0: no program; below 1 it only breaks ties between the samples' answers)."""
    adaptive: bool = False
    """Draw the samples in two waves, the second only if the first leaves the winner open
    (the same outcome as drawing them all; needs ``samples`` and no configured layers)."""
    first_wave: int | None = Field(default=None, ge=1)
    """With ``adaptive``: samples in the first wave (default: a majority of ``samples``).
    When they all state the same answer, the vote stops there; below a majority, that
    is an agreement stop whose outcome may differ from the full vote's."""

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _auto_and_adaptive_need_samples(self) -> VoteOptions:
        for name, given in (("answer: auto", self.answer == "auto"), ("adaptive", self.adaptive)):
            if given and self.samples is None:
                raise ValueError(f"{name} needs samples: N (the vote's own samples)")
        if self.first_wave is not None:
            if not self.adaptive:
                raise ValueError("first_wave only applies with adaptive: true")
            if self.samples is not None and self.first_wave > self.samples:
                raise ValueError(f"first_wave ({self.first_wave}) exceeds samples ({self.samples})")
        if self.program_votes:
            if self.samples is None:
                raise ValueError("program_votes needs samples: N (the vote's own samples)")
            if self.adaptive:
                raise ValueError("program_votes applies to the full vote, not with adaptive: true")
        return self


def tally(
    references: list[Reference], options: VoteOptions, kind: AnswerKind | None = None
) -> tuple[Counter[str], dict[str, int]]:
    """Votes per answer, and the first reply giving each answer (``kind`` overrides ``auto``)."""
    what: AnswerKind = kind or ("number" if options.answer == "auto" else options.answer)
    votes: Counter[str] = Counter()
    first: dict[str, int] = {}
    for index, reference in enumerate(references):
        answer = extract_answer(reference.text, what, options.pattern)
        if answer is None:
            continue
        votes[answer] += 1
        first.setdefault(answer, index)
    return votes, first


def decided(votes: Counter[str], min_votes: int, remaining: int) -> bool:
    """Whether more votes (``remaining`` of them) can no longer change the strict winner."""
    ranking = votes.most_common(2)
    if not ranking:
        return False
    top = ranking[0][1]
    second = ranking[1][1] if len(ranking) > 1 else 0
    return top >= min_votes and top > second + remaining


async def _adaptive_samples(
    ctx: RunContext, options: VoteOptions, kind: AnswerKind
) -> list[Reference]:
    """The samples in two waves: the first wave, then the rest if the winner is still open.

    The vote stops after the first wave when no later votes could change its winner, or
    when every sample of the wave states the same answer. Both waves make one layer.
    """
    layer = sample_layer(ctx, options)
    assert layer is not None  # the options' validator requires samples
    agents = layer.agents

    async def rest(drawn: LayerResult) -> Sequence[AgentSpec]:
        """The samples not drawn yet, or none when the votes so far decide the winner."""
        count = len(drawn.agents)
        remaining = agents[count:]
        if not remaining:
            return ()
        votes, _ = tally(ctx.references_of(drawn.agents), options, kind)
        unanimous = len(votes) == 1 and sum(votes.values()) == count >= options.min_votes
        if unanimous or decided(votes, options.min_votes, len(remaining)):
            ctx.notes.append(f"adaptive vote: decided after {count} of {len(agents)} samples")
            return ()
        return remaining

    wave = options.first_wave or len(agents) // 2 + 1
    result = await ctx.run_layer(1, LayerSpec(agents=agents[:wave]), (), more=rest)
    return ctx.references_of(result.agents)


async def _first_sample_alone(
    ctx: RunContext, options: VoteOptions, kind: QuestionKind | None
) -> AgentResult:
    """A request that is not voted on: the first sample answers alone, streamed."""
    layer = sample_layer(ctx, options)
    assert layer is not None  # the options' validator requires samples
    if kind is None:
        ctx.notes.append("vote: the request asks for no number or choice; one sample answers")
    else:
        asked = "code with worked examples" if kind == "code" else f"a {kind}"
        ctx.notes.append(f"vote: the request asks for {asked}, not voted on; one sample answers")
    return await ctx.aggregate((), layer.agents[0], layer=1)


def _note_skipped_options(ctx: RunContext, options: VoteOptions, kind: AnswerKind) -> None:
    """Say which options a mixture with its own ``layers`` does not apply, rather than none."""
    if options.program_votes and kind == "number":
        ctx.notes.append(
            "vote: program_votes skipped: the mixture configures its own layers after the "
            "samples, so the vote counts the last layer's answers and no program is written"
        )
    if options.adaptive:
        ctx.notes.append(
            "vote: adaptive skipped: the mixture configures its own layers after the "
            "samples, so every sample answers before them"
        )


def vote(options: VoteOptions) -> Strategy:
    async def run(ctx: RunContext) -> AgentResult:
        kind: AnswerKind | None
        if options.answer == "auto":
            text = last_user_text(ctx.messages)
            asked = question_kind(text)
            if asked is None or asked not in options.auto_votes:
                return await _first_sample_alone(ctx, options, asked)
            if asked == "code":
                examples = code_examples(text)
                assert examples is not None  # question_kind found them
                return await checked_code(ctx, options, examples, timeout=options.check_timeout)
            kind = asked
            ctx.notes.append(f"vote: the request asks for a {kind}")
        else:
            kind = options.answer
        program: ProgramAnswer | None = None
        if ctx.spec.layers:
            _note_skipped_options(ctx, options, kind)
        if options.program_votes and kind == "number" and not ctx.spec.layers:
            samples, program = await samples_and_program(ctx, options, options.check_timeout)
            references = ctx.references_of(samples)
        elif options.adaptive and not ctx.spec.layers:
            references = await _adaptive_samples(ctx, options, kind)
        else:
            references = await run_layers(ctx, options)
        votes, first = tally(references, options, kind)
        weights: dict[str, float] = dict(votes)
        if program is not None:
            ctx.notes.append(f"program vote: {program.detail}")
            if program.answer is not None:
                weights[program.answer] = weights.get(program.answer, 0) + options.program_votes
        ranking = sorted(weights.items(), key=lambda pair: -pair[1])
        counts = ", ".join(f"{answer!r}: {n:g}" for answer, n in ranking) or "no answer found"
        note = f"vote over {len(references)} answers: {counts}"
        ctx.notes.append(note)
        if ranking:
            top, top_votes = ranking[0]
            tied = len(ranking) > 1 and ranking[1][1] == top_votes
            if top_votes >= options.min_votes and (not tied or options.on_tie == "first"):
                ctx.notes.append(f"vote: {top!r} wins with {top_votes:g} of {len(references)}")
                if top in first:
                    text = references[first[top]].text
                else:  # only the program gave it
                    assert program is not None and program.reply is not None
                    text = program_text(program)
                return finish(ctx, text, name="vote", notes=(note,))
        ctx.notes.append("vote: no clear majority, the aggregator synthesizes")
        return await aggregate(ctx, references, policy=options.context)

    return run


register_strategy(
    "vote",
    vote,
    VoteOptions,
    "majority vote on the extracted final answer (self-consistency); synthesis on ties",
)
