"""Run one configuration over items and score it, through the eval harness's tasks and cache.

Every answer comes from :meth:`Mixture.arun` on a (caching) registry, so a
call that another configuration, an earlier search or ``moa eval`` already
made is free. Latency is timed as in ``moa eval`` (:mod:`moa.eval.timing`): a
cached call counts the duration of the call that filled the cache and a call that
waited for its provider's concurrency limit counts from its free slot, so that
configurations are compared on what they would really cost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from moa.engine.mixture import Mixture, check_models
from moa.engine.result import Result
from moa.engine.spec import MixtureSpec
from moa.errors import ConfigError, MoAError
from moa.eval.code import score_code
from moa.eval.datasets import EvalItem
from moa.eval.judge import Judge
from moa.eval.prompts import PromptSet
from moa.eval.stats import Estimate, mean_ci, paired_difference
from moa.eval.tasks import Task
from moa.eval.timing import item_timing
from moa.providers.cache import recording_hits
from moa.providers.registry import ProviderRegistry
from moa.types import Message, Usage

__all__ = ["Evaluation", "Evaluator", "ItemProgress", "Outcome"]


@dataclass(frozen=True)
class Outcome:
    """One item answered by one configuration."""

    item_id: str
    score: float | None
    """1/0 for exact-answer and code tasks (a failed run scores 0); a judge's score otherwise."""
    output: str
    answer: str | None = None
    """The answer extracted from ``output`` (exact-answer tasks)."""
    proposals: tuple[tuple[str, str], ...] = ()
    """``(model id, output)`` of every first-layer call, in order."""
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class Evaluation:
    """A configuration's outcomes over a list of items."""

    name: str
    spec: MixtureSpec
    outcomes: tuple[Outcome, ...]

    def scores(self) -> list[float]:
        return [o.score for o in self.outcomes if o.score is not None]

    def failures(self) -> list[Outcome]:
        """The items whose run failed (scored 0 on exact-answer and code tasks)."""
        return [o for o in self.outcomes if o.error is not None]

    @property
    def mean(self) -> float:
        values = self.scores()
        return sum(values) / len(values) if values else float("nan")

    def estimate(self) -> Estimate:
        return mean_ci(self.scores())

    def by_item(self) -> dict[str, Outcome]:
        return {o.item_id: o for o in self.outcomes}

    def paired_difference(self, other: Evaluation) -> Estimate:
        """This score minus ``other``'s over the items both scored (bootstrap 95% interval)."""
        ours, theirs = self.by_item(), other.by_item()
        ids = [i for i in ours if i in theirs]
        ids = [i for i in ids if ours[i].score is not None and theirs[i].score is not None]
        return paired_difference(
            [ours[i].score or 0.0 for i in ids], [theirs[i].score or 0.0 for i in ids]
        )

    def per_request(self) -> dict[str, float]:
        """Mean calls, tokens and (replayed) seconds per request."""
        n = max(len(self.outcomes), 1)
        return {
            "calls": sum(o.usage.calls for o in self.outcomes) / n,
            "tokens": sum(o.usage.total_tokens for o in self.outcomes) / n,
            "latency_s": sum(o.latency_s for o in self.outcomes) / n,
        }


ItemProgress = Callable[[str, int, int, "Outcome"], None]
"""Told after each item of an evaluation: (configuration name, items done, items, outcome)."""


class Evaluator:
    """Answers and scores items with any :class:`MixtureSpec` (results memoized by config)."""

    def __init__(
        self,
        task: Task,
        registry: ProviderRegistry,
        *,
        prompts: PromptSet | None = None,
        judge: Judge | None = None,
        concurrency: int = 1,
        progress: ItemProgress | None = None,
        timeout: float | None = None,
    ) -> None:
        if task.kind not in ("exact", "code") and judge is None:
            raise ConfigError(f"task {task.name!r} is scored by a judge: give --judge MODEL")
        self.task = task
        self.registry = registry
        self.prompts = prompts or PromptSet()
        self.judge = judge
        self.concurrency = max(concurrency, 1)
        self.progress = progress
        self.timeout = timeout
        """Seconds every call may take (``None``: each configuration's own); like the cache,
        it does not change what a configuration is."""
        self._memo: dict[tuple[str, str], Outcome] = {}

    def check(self, pool: Sequence[str]) -> None:
        """Before the first call: every pool model resolves and is installed, and so is the judge.

        A selection runs for hours; one that stopped at the first configuration using
        a model never pulled would lose the time spent before it, so every missing
        local model is named at once, with the one command that pulls them all.
        """
        check_models(pool, self.registry)
        if self.judge is not None:
            self.judge.mixture.check()

    async def evaluate(self, name: str, spec: MixtureSpec, items: Sequence[EvalItem]) -> Evaluation:
        timed = spec if self.timeout is None else spec.model_copy(update={"timeout": self.timeout})
        mixture = Mixture(timed, self.registry)
        mixture.check()
        identity = spec.model_dump_json(exclude={"name"})
        gate = asyncio.Semaphore(self.concurrency)
        done = 0

        async def one(item: EvalItem) -> Outcome:
            nonlocal done
            key = (identity, item.id)
            if key not in self._memo:
                async with gate:
                    self._memo[key] = await self._answer(mixture, item)
            done += 1
            if self.progress is not None:
                self.progress(name, done, len(items), self._memo[key])
            return self._memo[key]

        outcomes = await asyncio.gather(*(one(item) for item in items))
        return Evaluation(name, spec, tuple(outcomes))

    async def _answer(self, mixture: Mixture, item: EvalItem) -> Outcome:
        history: list[Message] = []
        results: list[Result] = []
        latency = 0.0
        try:
            for turn in range(len(item.turns)):
                history.append(Message("user", self.task.user_message(item, turn, self.prompts)))
                with recording_hits() as hits:
                    result = await mixture.arun(history)
                latency += item_timing(result, hits).latency_s
                results.append(result)
                history.append(Message("assistant", result.output))
        except ConfigError:
            raise
        except MoAError as exc:
            usage = Usage.sum(r.usage for r in results)
            failed = 0.0 if self.task.binary else None
            return Outcome(item.id, failed, "", usage=usage, error=f"{type(exc).__name__}: {exc}")
        usage = Usage.sum(r.usage for r in results)
        first = results[0].layers[0].agents if results[0].layers else ()
        proposals = tuple((c.model, c.output or "") for c in first if c.ok)
        score, answer = await self._score(item, [r.output for r in results])
        return Outcome(
            item.id, score, results[-1].output, answer, proposals, usage, round(latency, 4)
        )

    async def _score(self, item: EvalItem, outputs: list[str]) -> tuple[float | None, str | None]:
        if self.task.kind == "exact":
            exact = self.task.score(item, outputs[-1])
            return float(exact.correct), exact.extracted
        if self.task.kind == "code":
            result = await score_code(item, outputs[-1])
            return float(result.passed), None
        assert self.judge is not None
        if self.task.kind == "pairwise":
            verdict = await self.judge.pairwise(item.turns[0], outputs[-1], item.references[0])
            return verdict.preference, None
        grade = await self.judge.grade(item, outputs)
        return grade.score, None

    def extract(self, item: EvalItem, output: str) -> tuple[str | None, bool]:
        """The answer in ``output`` and whether it is right (exact-answer tasks only)."""
        exact = self.task.score(item, output)
        return exact.extracted, exact.correct
