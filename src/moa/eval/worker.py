"""Answering and scoring one (system, item) pair: the code every engine of ``moa eval`` runs.

:class:`EvalRun` decides what to run (blocks, baselines, Self-MoA, resuming)
and keeps the log; an :class:`EvalWorker` only turns an :class:`EvalJob` into
its log record. In this process the run owns one worker; with ``--engine ray``
each actor builds its own from an :class:`EvalWorkers` recipe, which is plain
data (task name, prompt folder, judge spec, provider settings and cache path),
so the records are the same wherever they were made.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moa.engine.events import Done
from moa.engine.mixture import Mixture
from moa.engine.result import Result
from moa.engine.spec import MixtureSpec
from moa.errors import ConfigError, MoAError
from moa.eval.code import score_code_record
from moa.eval.datasets import EvalItem
from moa.eval.judge import Judge
from moa.eval.prompts import PromptSet
from moa.eval.scorers import score_exact_record
from moa.eval.systems import System
from moa.eval.tasks import Task, get_task
from moa.eval.timing import Timing, item_timing
from moa.history import RunLog, setup_of
from moa.providers.cache import recording_hits, registry_with_cache
from moa.providers.registry import ProviderRegistry
from moa.providers.settings import LocalSettings, ProviderSettings
from moa.types import Message, Usage

__all__ = ["EvalJob", "EvalWorker", "EvalWorkers", "RegistryRecipe"]


@dataclass(frozen=True)
class EvalJob:
    """One system on one item; ``key`` is the system's key in this run (see ``EvalRun.key``)."""

    system: System
    key: str
    item: EvalItem


@dataclass(frozen=True)
class RegistryRecipe:
    """The providers of a run as data, to build them again in another process."""

    providers: Mapping[str, ProviderSettings] = field(default_factory=dict)
    local: LocalSettings = field(default_factory=LocalSettings)
    cache: Path | None = None
    """The call cache (absolute: a Ray actor's working folder is not the driver's)."""
    cache_only: bool = False
    """Replay the cache only: a call it lacks ends the run (see :mod:`moa.providers.cache`)."""

    def __call__(self) -> ProviderRegistry:
        return registry_with_cache(self.providers, self.local, self.cache, self.cache_only)


class EvalWorker:
    """Answers and scores jobs with one provider registry (each model loaded once)."""

    def __init__(
        self,
        task: Task,
        prompts: PromptSet,
        registry: ProviderRegistry,
        judge: MixtureSpec | None = None,
        *,
        run_log: RunLog | None = None,
        judge_protocol: str = "pairwise",
    ) -> None:
        self.task = task
        self.run_log = run_log
        """Where each answered turn is recorded as a run (``moa eval --log-history``)."""
        self.prompts = prompts
        self.registry = registry
        self.judge = (
            None if judge is None else Judge(Mixture(judge, registry), prompts, judge_protocol)
        )
        self._mixtures: dict[str, Mixture] = {}

    def mixture(self, system: System) -> Mixture:
        if system.name not in self._mixtures:
            self._mixtures[system.name] = Mixture(system.spec, self.registry)
        return self._mixtures[system.name]

    async def answer(self, job: EvalJob) -> dict[str, Any]:
        return await self.run_item(job.system, job.key, job.item)

    async def aclose(self) -> None:
        await self.registry.aclose()

    async def run_item(self, system: System, key: str, item: EvalItem) -> dict[str, Any]:
        """Answer ``item`` with ``system`` (every turn) and score it: one log record."""
        mixture = self.mixture(system)
        record: dict[str, Any] = {
            "task": self.task.name,
            "system": system.name,
            "key": key,
            "item_id": item.id,
            "category": item.category,
        }
        history: list[Message] = []
        results: list[Result] = []
        timings: list[Timing] = []
        run_ids: list[str] = []
        try:
            for turn in range(len(item.turns)):
                history.append(Message("user", self.task.user_message(item, turn, self.prompts)))
                with recording_hits() as hits:
                    result = await self._answer(system, mixture, history, run_ids)
                results.append(result)
                timings.append(item_timing(result, hits))
                history.append(Message("assistant", result.output))
        except ConfigError:
            raise  # a broken setup fails every item: stop instead of logging each failure
        except MoAError as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
        record["prompts"] = [m.content for m in history if m.role == "user"]
        record["outputs"] = [r.output for r in results]
        record["output"] = results[-1].output if results else None
        record.update(_accounting(results, timings))
        record["calls"] = [
            c for turn, r in enumerate(results) for c in _call_records(r, turn, timings[turn])
        ]
        if run_ids:
            record["history_ids"] = run_ids  # moa logs show ID
        if "error" not in record:
            await self._score(record, item, results)
        else:
            record["score"] = None
        record["finished_at"] = round(time.time(), 3)
        return record

    async def _answer(
        self, system: System, mixture: Mixture, history: list[Message], run_ids: list[str]
    ) -> Result:
        """One turn's answer; recorded in the run history when that is asked for."""
        if self.run_log is None:
            return await mixture.arun(history)
        capture = self.run_log.start(
            mixture.spec,
            tuple(history),
            source="eval",
            setup=None if system.config is None else setup_of(system.config),
        )
        run_ids.append(capture.id)
        error: BaseException | None = None
        try:
            async for event in mixture.astream(history, trace_id=capture.trace_id):
                capture.observe(event)
                if isinstance(event, Done):
                    return event.result
        except Exception as exc:  # the item's error is recorded; a cancel counts as cancelled
            error = exc
            raise
        finally:
            self.run_log.submit(capture.finish(error=error))
        raise AssertionError("a run always ends with a Done event")  # pragma: no cover

    async def _score(self, record: dict[str, Any], item: EvalItem, results: list[Result]) -> None:
        output = results[-1].output
        if self.task.kind == "exact":
            record["gold"] = item.answer
            if item.choices:
                record["choices"] = list(item.choices)
            score_exact_record(record)
        elif self.task.kind == "code":
            await score_code_record(record, item)
        elif self.judge is None:  # a judged task run with --no-judge: the answers alone
            record.update(score=None, output_chars=len(output))
            if self.task.kind == "pairwise":
                record.update(
                    reference_chars=len(item.references[0]), dataset=item.meta.get("dataset", "")
                )
        elif self.task.kind == "pairwise":
            verdict = await self.judge.pairwise(item.turns[0], output, item.references[0])
            record.update(
                score=verdict.preference,
                judge=verdict.to_dict(),
                output_chars=len(output),
                reference_chars=len(item.references[0]),
                dataset=item.meta.get("dataset", ""),
            )
        else:
            grade = await self.judge.grade(item, [r.output for r in results])
            record.update(score=grade.score, judge=grade.to_dict())


@dataclass(frozen=True)
class EvalWorkers:
    """Builds an :class:`EvalWorker` where the work runs (picklable when ``registry`` is)."""

    task: str
    registry: Callable[[], ProviderRegistry]
    prompts_dir: Path | None = None
    judge: MixtureSpec | None = None
    judge_protocol: str = "pairwise"

    def __call__(self) -> EvalWorker:
        return EvalWorker(
            get_task(self.task),
            PromptSet(self.prompts_dir),
            self.registry(),
            self.judge,
            judge_protocol=self.judge_protocol,
        )


def _accounting(results: Sequence[Result], timings: Sequence[Timing]) -> dict[str, Any]:
    usage = Usage.sum(r.usage for r in results)
    costs = [r.cost for r in results if r.cost is not None]
    sources = {t.source for t in timings}
    # One label for all turns: "replayed" or "measured" only when every turn was.
    source = sources.pop() if len(sources) == 1 else "rebuilt"
    return {
        "usage": usage.to_dict(),
        "cost": sum(costs) if costs else None,
        "latency_s": round(sum(t.latency_s for t in timings), 4),
        "ttft_s": round(timings[0].ttft_s, 4) if timings and timings[0].ttft_s else None,
        "latency_source": source,
        "wall_s": round(sum(r.latency_s for r in results), 4),
    }


def _call_records(result: Result, turn: int, timing: Timing) -> list[dict[str, Any]]:
    """Each call of one turn; a cache hit also has the duration of the call that filled it."""
    return [
        {
            "turn": turn,
            "layer": call.layer,
            "index": call.index,
            "role": call.role,
            "model": call.model,
            "output": call.output,
            "error": call.error,
            "usage": call.usage.to_dict(),
            "latency_s": round(call.latency_s, 4),
            **({"queued_s": round(call.queued_s, 4)} if call.queued_s else {}),
            "finish_reason": call.finish_reason,
            **({} if call.computed is None else {"computed": call.computed}),
            **({} if hit is None else {"cached_latency_s": round(hit, 4)}),
        }
        for call, hit in zip(result.calls(), timing.cached_latency_s, strict=True)
    ]
