"""``moa judge validate``: run the comparisons that tell whether a judge can be trusted.

Over the first N AlpacaEval instructions the weak model answers each one
(greedy, 512 tokens: the same call as ``moa eval --system WEAK``), then the
judge compares, in both orders, gpt4_1106_preview's reference output with the
weak answer, and Together-MoA's and Together-MoA-Lite's reference outputs with
it. The judge is built by :func:`~moa.eval.systems.judge_system` and asked
through :meth:`Judge.pairwise` over the call cache, exactly as ``moa eval``
asks it, so the calls are shared with evaluations, a rerun is free and an
interrupted run resumes. :mod:`moa.eval.judge_criteria` turns the records into
the verdict; ``judge-validation.json``, ``report.md`` and ``comparisons.jsonl``
go to the output folder. With ``stop_early`` the judging stops as soon as the
weak answer has won too often to reach the threshold over N instructions,
since nothing after that can turn the verdict into a pass.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from moa.engine.mixture import Mixture
from moa.errors import ConfigError, MoAError
from moa.eval.datasets import EvalItem, load_alpaca_eval
from moa.eval.judge import Judge
from moa.eval.judge_criteria import (
    BASELINE,
    COMPARISONS,
    FORMAT,
    EarlyStop,
    assess,
    early_stop,
    render_validation,
)
from moa.eval.prompts import PromptSet
from moa.eval.systems import (
    GenerationSettings,
    judge_key,
    judge_system,
    merged_provider_settings,
    resolve_system,
)
from moa.eval.worker import RegistryRecipe
from moa.providers.cache import DEFAULT_CACHE
from moa.providers.registry import ProviderRegistry
from moa.types import Message

__all__ = ["DEFAULT_WEAK", "JudgeCheck", "JudgeCheckOptions", "Progress"]

DEFAULT_WEAK = "local:smollm2-135m"
WEAK_SETTINGS = GenerationSettings(max_tokens=512, temperature=0.0, seed=0)
"""The weak model answers like ``moa eval``'s single models by default (so they share calls)."""

Progress = Callable[[str, int, int], None]
"""Told ``(phase, done, total)`` as the work advances."""


@dataclass(frozen=True)
class JudgeCheckOptions:
    """Everything ``moa judge validate`` is asked to do."""

    judge: str
    data: Path
    """A folder holding ``instructions.json`` and ``reference_outputs/NAME.json``."""
    out: Path
    items: int = 100
    weak: str = DEFAULT_WEAK
    concurrency: int = 1
    cache: Path | None = DEFAULT_CACHE
    prompts_dir: Path | None = None
    timeout: float | None = None
    cache_only: bool = False
    """Replay the call cache only: a call it lacks stops the validation."""
    protocol: str = "pairwise"
    """How the judge compares (:data:`~moa.eval.judge.PROTOCOLS`), as ``moa eval`` will."""
    stop_early: bool = False
    """Stop judging once the weak-answer check cannot pass over ``items`` (see
    :func:`~moa.eval.judge_criteria.early_stop`); the known order is then not run."""
    command: str = ""


class JudgeCheck:
    """One validation: the items, the judge, the weak model and their providers."""

    def __init__(self, options: JudgeCheckOptions, *, registry: ProviderRegistry | None = None):
        if options.items < 1 or options.concurrency < 1:
            raise ConfigError("--items and --concurrency must be at least 1")
        self.options = options
        self.prompts = PromptSet(options.prompts_dir)
        self.items = {name: self._load(name) for name in (BASELINE, *_systems().values())}
        self.baseline = {item.id: item.references[0] for item in self.items[BASELINE]}
        self.judge_system = judge_system(options.judge, options.timeout)
        self.weak = resolve_system(options.weak, WEAK_SETTINGS).with_timeout(options.timeout)
        self.registry = registry or self._registry()
        self.judge = Judge(
            Mixture(self.judge_system.spec, self.registry), self.prompts, options.protocol
        )
        self.weak_mixture = Mixture(self.weak.spec, self.registry)

    def _load(self, name: str) -> list[EvalItem]:
        folder = self.options.data.expanduser()
        reference = folder / "reference_outputs" / f"{name}.json"
        if not (folder / "instructions.json").is_file() or not reference.is_file():
            raise ConfigError(
                f"--data {str(folder)!r} must hold instructions.json and "
                f"reference_outputs/{name}.json (AlpacaEval's model_outputs.json format)"
            )
        items = load_alpaca_eval(folder / "instructions.json", reference)[: self.options.items]
        if len(items) < self.options.items:
            raise ConfigError(f"--items {self.options.items}: {folder} has only {len(items)}")
        return items

    def _registry(self) -> ProviderRegistry:
        configs = [s.config for s in (self.judge_system, self.weak) if s.config is not None]
        providers, local = merged_provider_settings(configs)
        cache = self.options.cache
        resolved = cache and cache.expanduser().resolve()
        return RegistryRecipe(providers, local, resolved, self.options.cache_only)()

    def identity(self) -> dict[str, Any]:
        """The judge as ``judge-validation.json`` names it; ``key`` is what ``moa eval`` checks."""
        key = judge_key(self.judge_system, self.prompts, self.options.protocol)
        prompts = self.options.prompts_dir
        return {
            "spec": self.options.judge,
            "key": key,
            "protocol": self.options.protocol,
            "identity": self.judge_system.identity(),
            "prompts": None if prompts is None else str(prompts),
        }

    # -- running ------------------------------------------------------------------------------

    async def arun(self, progress: Progress | None = None) -> dict[str, Any]:
        """Answer, compare, assess; write the files; the ``judge-validation.json`` document."""
        tell = progress or (lambda phase, done, total: None)
        self.judge.mixture.check()
        self.weak_mixture.check()
        stopped: EarlyStop | None = None
        try:
            answers = await self._bounded(
                "weak answers", [partial(self._answer, i) for i in self.items[BASELINE]], tell
            )
            weak = [
                partial(self._compare, "weak", item, answer)
                for item, answer in zip(self.items[BASELINE], answers, strict=True)
            ]
            others = [
                partial(self._compare, name, item, item.references[0], source)
                for name, source in _systems().items()
                for item in self.items[source]
            ]
            if self.options.stop_early:
                records, stopped = await self._weak_until_sealed(weak, tell)
            else:
                records = await self._bounded("judge comparisons", [*weak, *others], tell)
            if stopped is None and self.options.stop_early:
                records += await self._bounded("known-order comparisons", others, tell)
        finally:
            await self.registry.aclose()
        return self._write(records, stopped)

    def run(self, progress: Progress | None = None) -> dict[str, Any]:
        """Blocking :meth:`arun`."""
        return asyncio.run(self.arun(progress))

    async def _weak_until_sealed(
        self, jobs: Sequence[Callable[[], Awaitable[dict[str, Any]]]], tell: Progress
    ) -> tuple[list[dict[str, Any]], EarlyStop | None]:
        """The weak pairs in waves of ``concurrency``, until the weak-answer check is sealed.

        The verdict is taken on the first instructions in order, and the records
        end with the one that sealed it, so the outcome does not depend on which
        calls finished first; the waves make which calls are made depend on
        ``concurrency`` alone, so the same command replays from the cache.
        """
        records: list[dict[str, Any]] = []
        size = self.options.concurrency
        for start in range(0, len(jobs), size):
            wave = jobs[start : start + size]
            records += await self._bounded("weak-answer comparisons", wave, tell, start, len(jobs))
            stopped = early_stop(records, self.options.items)
            if stopped is not None:
                return records[: stopped.judged], stopped
        return records, None

    async def _bounded(
        self,
        phase: str,
        jobs: Sequence[Callable[[], Awaitable[Any]]],
        tell: Progress,
        offset: int = 0,
        total: int | None = None,
    ) -> list[Any]:
        """Run ``jobs`` with at most ``concurrency`` at once, started in order; their results.

        Progress counts from ``offset`` of ``total`` (default: these jobs alone).
        """
        gate = asyncio.Semaphore(self.options.concurrency)
        total = len(jobs) if total is None else total
        done = offset
        tell(phase, done, total)

        async def one(job: Callable[[], Awaitable[Any]]) -> Any:
            nonlocal done
            async with gate:
                result = await job()
            done += 1
            tell(phase, done, total)
            return result

        return list(await asyncio.gather(*(one(job) for job in jobs)))

    async def _answer(self, item: EvalItem) -> str | MoAError:
        try:
            result = await self.weak_mixture.arun([Message("user", item.turns[0])])
        except ConfigError:
            raise
        except MoAError as exc:
            return exc
        return result.output

    async def _compare(
        self, name: str, item: EvalItem, output: str | MoAError, source: str | None = None
    ) -> dict[str, Any]:
        """``output`` against the baseline's reference for ``item``, in both orders."""
        reference = self.baseline[item.id]
        record: dict[str, Any] = {
            "comparison": name,
            "item_id": item.id,
            "generator": source or self.weak.name,
        }
        if isinstance(output, MoAError):
            return {**record, "error": f"{type(output).__name__}: {output}"}
        try:
            verdict = await self.judge.pairwise(item.turns[0], output, reference)
        except ConfigError:
            raise
        except MoAError as exc:
            return {**record, "error": f"{type(exc).__name__}: {exc}"}
        record.update(verdict.to_dict(), output=output if name == "weak" else None)
        return record

    # -- files ----------------------------------------------------------------------------------

    def _write(self, records: list[dict[str, Any]], stopped: EarlyStop | None) -> dict[str, Any]:
        assessment = assess(records)
        criteria = assessment.criteria()
        if stopped is not None:
            criteria["known_order"]["passed"] = None  # not run, neither passed nor failed
        document = {
            "format": FORMAT,
            "validated": assessment.validated,
            "judge": self.identity(),
            "weak": {
                "spec": self.options.weak,
                "key": self.weak.key(),
                "max_tokens": WEAK_SETTINGS.max_tokens,
            },
            "data": str(self.options.data),
            "items": self.options.items,
            "criteria": criteria,
            "stopped_early": None if stopped is None else stopped.to_dict(),
            "command": self.options.command,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        out = self.options.out
        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(document, indent=2, ensure_ascii=False)
        (out / "judge-validation.json").write_text(text + "\n", "utf-8")
        (out / "report.md").write_text(render_validation(document), "utf-8")
        with (out / "comparisons.jsonl").open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        return document


def _systems() -> dict[str, str]:
    """Comparison name → the published outputs it compares with the baseline."""
    return {name: source for name, source in COMPARISONS.items() if source}
