"""Code requests with worked examples: each sample's code is run on them, the best one answers.

The first sample (the greedy one, with ``greedy_first``) is drawn alone and its
code run on the request's examples in the sandbox (:mod:`moa.code_examples`).
When it gets them all right it is the answer, at the cost of the model alone
plus one sandboxed run. Otherwise the other samples are drawn, as one batch,
and the first one (in sample order) that gets the most examples right answers;
on a tie the earlier sample wins, so the greedy answer stands unless a sample
does strictly better. The answer is chosen, not written, so it is not streamed
while the samples are drawn.

Generated code runs only where the sandbox protects the user's files (it runs
as an unprivileged user, or sees the filesystem read-only); elsewhere, and off
Linux, the first sample answers alone, as for any other request, and the notes
say why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import cache

from moa.code_examples import CodeExamples, ExamplesResult, check_reply, describe
from moa.engine.context import RunContext
from moa.engine.result import AgentResult, LayerResult
from moa.engine.spec import AgentSpec, LayerSpec
from moa.errors import ConfigError
from moa.eval.sandbox import SandboxLimits, run_python
from moa.strategies.common import StrategyOptions, finish, sample_layer

__all__ = ["checked_code", "sandbox_protects_files"]


@cache
def _probe() -> str | None:
    """``None`` when generated code may run here, else why not (asked once per process)."""
    try:
        result = run_python("pass\n", SandboxLimits(timeout=10.0))
    except (ConfigError, OSError) as exc:
        return f"the sandbox cannot run here: {exc}"
    if not result.ok:
        return f"the sandbox failed to start a program ({result.stderr.strip()[-200:]})"
    isolation = result.isolation
    if not isolation.files_protected:
        return (
            "the sandbox cannot protect your files here (the program ran as "
            f"{isolation.user}, read-only root: {isolation.read_only_root})"
        )
    return None


async def sandbox_protects_files() -> str | None:
    """``None`` when generated code may run here, else why not."""
    return await asyncio.to_thread(_probe)


async def checked_code(
    ctx: RunContext, options: StrategyOptions, examples: CodeExamples, *, timeout: float
) -> AgentResult:
    """The sample whose code gets the most of ``examples`` right (the first on a tie)."""
    layer = sample_layer(ctx, options)
    assert layer is not None  # answer: auto requires samples
    agents = layer.agents
    refused = await sandbox_protects_files()
    if refused is not None:
        ctx.notes.append(f"code check: not run, {refused}; one sample answers")
        return await ctx.aggregate((), agents[0], layer=1)
    count = len(examples.examples)
    ctx.notes.append(f"code check: {count} worked examples of {examples.entry_point}()")
    scores: dict[int, ExamplesResult] = {}

    async def rest(drawn: LayerResult) -> Sequence[AgentSpec]:
        """Check the samples not checked yet; the samples not drawn, unless one passed."""
        new = [(i, r) for i, r in enumerate(drawn.agents) if r.ok and i not in scores]
        results = await asyncio.gather(
            *(check_reply(examples, r.output or "", timeout=timeout) for _, r in new)
        )
        scores.update((i, score) for (i, _), score in zip(new, results, strict=True))
        if any(score.all_passed for score in scores.values()):
            return ()
        return agents[len(drawn.agents) :]

    result = await ctx.run_layer(1, LayerSpec(agents=agents[:1]), (), more=rest)
    if not scores:
        ctx.notes.append("code check: no sample answered; the aggregator answers alone")
        return await ctx.aggregate(())
    best = max(scores, key=lambda i: (scores[i].passed, -i))
    chosen = result.agents[best]
    summary = ", ".join(f"{result.agents[i].agent}: {describe(s)}" for i, s in scores.items())
    note = f"code check: {summary}; {chosen.agent} answers ({scores[best].passed}/{count})"
    ctx.notes.append(note)
    return finish(ctx, chosen.output or "", name="code check", notes=(note,))
