"""A vote with one more voter that computes instead of reasoning: a program, run in the sandbox.

Next to the vote's samples, one more call asks the same model for a Python
program that prints the answer (program-aided reasoning); the request for a
program follows the user's last message, in the same turn, so that it
overrides an instruction there about the answer's form ("no code"). The program runs in
the sandbox (:mod:`moa.eval.sandbox`), and the number it prints joins the vote
with its own weight: below one vote it only breaks ties between the samples'
answers, at one it is one more voter, above one it outweighs a single sample.
Arithmetic the model gets wrong in prose it often gets right in code, and the
two fail on different questions, which is what a vote needs.

The program's code is model output: it runs only where the sandbox protects
the user's files, and only what it prints on stdout is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace

from moa.answers import extract_answer
from moa.engine.context import RunContext
from moa.engine.result import AgentResult
from moa.engine.spec import AgentSpec
from moa.eval.code import python_blocks
from moa.eval.sandbox import SandboxLimits, arun_python
from moa.strategies.code_check import sandbox_protects_files
from moa.strategies.common import StrategyOptions, prompt, run_extra, sample_layer
from moa.types import Message

__all__ = ["ProgramAnswer", "program_agent", "program_text", "run_program", "samples_and_program"]


@dataclass(frozen=True)
class ProgramAnswer:
    """What the program printed, the number read from it, and the reply that wrote it."""

    answer: str | None
    printed: str
    reply: AgentResult | None
    detail: str
    """``printed N``, or why there is no answer (no reply, a timeout, the error's last line)."""


def program_agent(ctx: RunContext, options: StrategyOptions) -> AgentSpec:
    """The agent that writes the program: the samples' model, greedy."""
    base = options.model or ctx.spec.aggregator.model_copy(update={"name": None})
    count = options.sample_count or 0
    return base.model_copy(
        update={"temperature": 0.0, "seed": options.seed + count, "name": "program"}
    )


def program_messages(messages: Sequence[Message]) -> list[Message]:
    """The conversation with the request for a program added to its last user message."""
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    asked = list(messages)
    if last is None:
        return [*asked, Message("user", prompt("program"))]
    message = asked[last]
    asked[last] = replace(message, content=f"{message.content}\n\n{prompt('program')}")
    return asked


async def run_program(reply: AgentResult, timeout: float) -> ProgramAnswer:
    """Run the code of ``reply`` in the sandbox and read the number it prints last."""
    blocks = python_blocks(reply.output or "")
    code = blocks[0] if blocks else (reply.output or "")
    result = await arun_python(code, SandboxLimits(timeout=timeout))
    printed = result.stdout.strip()
    if not result.ok:
        return ProgramAnswer(None, printed, reply, result.failure())
    last = printed.splitlines()[-1] if printed else ""
    answer = extract_answer(last, "number")
    return ProgramAnswer(answer, printed, reply, f"printed {last[:80]!r}")


async def samples_and_program(
    ctx: RunContext, options: StrategyOptions, timeout: float
) -> tuple[list[AgentResult], ProgramAnswer]:
    """The samples (one layer) and, decoded beside them, the program; then the program runs."""
    layer = sample_layer(ctx, options)
    assert layer is not None  # the options' validator requires samples
    refused = await sandbox_protects_files()
    if refused is not None:
        result = await ctx.run_layer(1, layer, ())
        return list(result.agents), ProgramAnswer(None, "", None, f"not run, {refused}")
    call = ctx.agent_call(
        program_agent(ctx, options),
        layer=1,
        index=len(layer.agents),
        role="proposer",
        messages=program_messages(ctx.messages),
    )
    result, (program,) = await asyncio.gather(ctx.run_layer(1, layer, ()), run_extra(ctx, [call]))
    samples = list(result.agents)
    if not program.ok:
        return samples, ProgramAnswer(None, "", None, "the program call failed")
    ran = await run_program(program, timeout)
    if ran.answer is not None:  # the call's record shows the number it computed
        at = next(i for i, call in enumerate(ctx.extra_calls) if call is program)
        ctx.extra_calls[at] = replace(program, computed=ran.answer)
    return samples, ran


def program_text(program: ProgramAnswer) -> str:
    """The answer shown when the program's number wins alone: its code, and what it printed."""
    code = (program.reply.output or "") if program.reply is not None else ""
    printed = program.printed.splitlines()[-1][:200] if program.printed else ""
    return f"{code.rstrip()}\n\nRunning it prints: {printed}\n\nThe answer is {program.answer}"
