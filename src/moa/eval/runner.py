"""Run systems over a task's items and log one record per (system, item).

Order of work: items go in blocks (``block``, default 20). In each block the
single models answer first, then every other system, so an unfinished run has
every system on the same first items. After the first block the best single
model is known and its Self-MoA joins (the choice is kept in ``run.json``, so
a resumed run keeps it). Every answer comes from :meth:`Mixture.arun`; every
model call goes through the call cache, so a rerun of the same command skips
logged items and recomputes nothing it has seen before. With ``history`` set
(``moa eval --log-history``) every answered turn is also a run in the run
history, written by the same background writer as ``moa run``'s.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from moa.config import MixtureConfig
from moa.engine.events import Done
from moa.engine.mixture import Mixture
from moa.engine.result import Result
from moa.errors import ConfigError, MoAError
from moa.eval.code import score_code_record
from moa.eval.datasets import EvalItem
from moa.eval.judge import Judge
from moa.eval.prompts import PromptSet
from moa.eval.records import ItemLog
from moa.eval.scorers import score_exact_record
from moa.eval.systems import (
    GenerationSettings,
    System,
    merged_provider_settings,
    proposer_baselines,
    resolve_system,
    self_moa_spec,
    unique,
)
from moa.eval.tasks import Task, get_task
from moa.eval.timing import replayed_timing
from moa.history import HistorySettings, RunLog, setup_of
from moa.providers.cache import DEFAULT_CACHE, CachingRegistry, SQLiteCallStore, recording_hits
from moa.providers.registry import ProviderRegistry
from moa.types import Message, Usage

__all__ = ["EvalOptions", "EvalRun", "Observer", "select_items"]


@dataclass(frozen=True)
class EvalOptions:
    """Everything ``moa eval`` is asked to do."""

    task: str
    data: str
    out: Path
    systems: Sequence[str] = ()
    reference: str | None = None
    limit: int | None = None
    seed: int = 0
    shuffle: bool = False
    subset: Sequence[str] = ()
    """Keep only items of these categories (MMLU subject, MT-Bench category, AlpacaEval set)."""
    indices: Sequence[int] = ()
    concurrency: int = 1
    baselines: bool = True
    judge: str | None = None
    cache: Path | None = DEFAULT_CACHE
    """The call cache file; ``None`` turns caching off."""
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    prompts_dir: Path | None = None
    timeout: float | None = None
    """Seconds one call may take, for every system (``None``: each system's own)."""
    block: int = 20
    """Items per block: every system finishes a block before the next one starts, so an
    unfinished run compares all systems on the same items (0: one block)."""
    report_every: int = 25
    """Rewrite the report after this many newly finished items (0: only at the end)."""
    command: str = ""
    history: HistorySettings | None = None
    """Record every answered turn in this run history (``None``, the default: not recorded)."""


class Observer(Protocol):
    """Told about progress (the CLI draws a progress bar from it)."""

    def start(self, total: int, done: int) -> None: ...

    def phase(self, text: str) -> None: ...

    def finished(self, record: dict[str, Any]) -> None: ...


class _Silent:
    def start(self, total: int, done: int) -> None:
        pass

    def phase(self, text: str) -> None:
        pass

    def finished(self, record: dict[str, Any]) -> None:
        pass


def select_items(
    items: Sequence[EvalItem],
    *,
    limit: int | None = None,
    seed: int = 0,
    shuffle: bool = False,
    subset: Sequence[str] = (),
    indices: Sequence[int] = (),
) -> list[EvalItem]:
    """Filter by position and category, maybe shuffle (with ``seed``), then cut to ``limit``."""
    chosen = list(items)
    if indices:
        bad = [i for i in indices if not 0 <= i < len(items)]
        if bad:
            raise ConfigError(f"item positions {bad} are outside 0..{len(items) - 1}")
        chosen = [items[i] for i in indices]
    if subset:
        wanted = {s.lower() for s in subset}
        chosen = [i for i in chosen if (i.category or "").lower() in wanted]
        if not chosen:
            raise ConfigError(f"no items in the subset {', '.join(subset)}")
    if shuffle:
        random.Random(seed).shuffle(chosen)
    return chosen[:limit] if limit is not None else chosen


class EvalRun:
    """One evaluation: resolved systems, items, providers, and the log in ``options.out``."""

    def __init__(self, options: EvalOptions, *, registry: ProviderRegistry | None = None) -> None:
        if options.concurrency < 1:
            raise ConfigError("--concurrency must be at least 1")
        self.options = options
        self.task: Task = get_task(options.task)
        self.prompts = PromptSet(options.prompts_dir)
        self.items = select_items(
            self.task.load(options.data, options.reference),
            limit=options.limit,
            seed=options.seed,
            shuffle=options.shuffle,
            subset=options.subset,
            indices=options.indices,
        )
        if not self.items:
            raise ConfigError("no items to evaluate (check --data, --limit and --subset)")
        user = [resolve_system(text, options.generation) for text in options.systems]
        if not user and not options.baselines:
            raise ConfigError("nothing to evaluate: give --system (or allow the baselines)")
        judge_config = self._judge_config()
        configs = [s.config for s in user if s.config is not None]
        self.registry = registry or self._registry([*configs, *judge_config])
        baselines = proposer_baselines(user, options.generation) if options.baselines else []
        self.systems: list[System] = [
            s.with_timeout(options.timeout) for s in unique([*user, *baselines])
        ]
        self.self_moa_wanted = options.baselines and any(s.single for s in self.systems)
        self._self_moa_added = False
        self.self_moa_of: str | None = None
        """The single model the automatic Self-MoA samples (chosen after the first block)."""
        self._fresh = 0
        self.judge = self._judge(judge_config)
        self.log = ItemLog(options.out / "items.jsonl")
        self.run_log = RunLog(options.history) if options.history is not None else None
        self._context = self._run_context()

    # -- setup ------------------------------------------------------------------------------

    def _registry(self, configs: Sequence[MixtureConfig]) -> ProviderRegistry:
        providers, local = merged_provider_settings(configs)
        if self.options.cache is None:
            return ProviderRegistry(providers, local)
        return CachingRegistry(providers, local, store=SQLiteCallStore(self.options.cache))

    def _judge_config(self) -> list[MixtureConfig]:
        if self.task.kind in ("exact", "code"):
            return []
        if self.options.judge is None:
            raise ConfigError(
                f"task {self.task.name!r} needs a judge: give --judge with a model id "
                "(e.g. openai:gpt-4o), a preset or a config file"
            )
        judge = resolve_system(self.options.judge, GenerationSettings(temperature=0.0))
        return [judge.config] if judge.config is not None else []

    def _judge(self, configs: Sequence[MixtureConfig]) -> Judge | None:
        if self.options.judge is None or self.task.kind in ("exact", "code"):
            return None
        settings = GenerationSettings(temperature=0.0, max_tokens=1024, seed=0)
        judge = resolve_system(self.options.judge, settings).with_timeout(self.options.timeout)
        return Judge(Mixture(judge.spec, self.registry), self.prompts)

    def _run_context(self) -> dict[str, Any]:
        """What, besides a system's own configuration, decides its records."""
        context: dict[str, Any] = {
            "task": self.task.name,
            "templates": {name: self.prompts.get(name) for name in self.task.templates()},
        }
        if self.judge is not None:
            context["judge"] = self.judge.mixture.spec.model_dump(
                mode="json", exclude={"name", "timeout", "retry", "deadline"}
            )
            context["judge_templates"] = self.options.prompts_dir and str(self.options.prompts_dir)
        return context

    def key(self, system: System) -> str:
        return system.key(self._context)

    # -- running ----------------------------------------------------------------------------

    async def arun(self, observer: Observer | None = None) -> Path:
        """Run every missing (system, item) pair; returns the output directory."""
        observer = observer or _Silent()
        self.options.out.mkdir(parents=True, exist_ok=True)
        self._restore_self_moa()
        observer.start(self._total(), self.count_done(self.systems, self.log.completed()))
        self.write_run_info()
        for system in self.systems:
            Mixture(system.spec, self.registry).check()
        size = self.options.block or len(self.items)
        try:
            for start in range(0, len(self.items), size):
                block = self.items[start : start + size]
                observer.phase(f"items {start + 1}-{start + len(block)} of {len(self.items)}")
                await self._run_jobs([s for s in self.systems if s.single], block, observer)
                if self._add_self_moa():
                    done = self.count_done(self.systems, self.log.completed())
                    observer.start(self._total(), done)
                others = [s for s in self.systems if not s.single]
                await self._run_jobs(others, block, observer)
        finally:
            await self.registry.aclose()
            if self.run_log is not None:
                await asyncio.to_thread(self.run_log.close)
        return self.options.out

    def _total(self) -> int:
        extra = 1 if self.self_moa_wanted and not self._self_moa_added else 0
        return len(self.items) * (len(self.systems) + extra)

    def _add_self_moa(self) -> bool:
        """Add the Self-MoA of the best single model once; whether the systems changed."""
        if not self.self_moa_wanted or self._self_moa_added:
            return False
        self._self_moa_added = True
        best = self.best_single([s for s in self.systems if s.single])
        if best is not None:
            self._use_self_moa(best)
        return True

    def _use_self_moa(self, best: System) -> None:
        self.self_moa_of = best.model
        self.systems = unique([*self.systems, self._self_moa(best)])
        self.write_run_info()

    def _restore_self_moa(self) -> None:
        """A resumed run keeps the model its Self-MoA was chosen for (see ``run.json``)."""
        path = self.options.out / "run.json"
        if not self.self_moa_wanted or not path.is_file():
            return
        try:
            chosen = json.loads(path.read_text("utf-8")).get("self_moa_of")
        except (OSError, json.JSONDecodeError):
            return
        match = next((s for s in self.systems if s.single and s.model == chosen), None)
        if match is not None:
            self._self_moa_added = True
            self._use_self_moa(match)

    def run(self, observer: Observer | None = None) -> Path:
        """Blocking :meth:`arun`."""
        return asyncio.run(self.arun(observer))

    def count_done(self, systems: Sequence[System], done: dict[tuple[str, str], Any]) -> int:
        return sum((self.key(s), i.id) in done for s in systems for i in self.items)

    def _self_moa(self, best: System) -> System:
        model = best.model
        assert model is not None
        spec = self_moa_spec(model, self.options.generation)
        system = System(spec.name, spec, "self-moa", f"Self-MoA of the best single model, {model}")
        return system.with_timeout(self.options.timeout)

    def best_single(self, singles: Sequence[System]) -> System | None:
        """The single model with the highest mean score over the logged items."""
        done = self.log.completed()
        best: tuple[float, System] | None = None
        for system in singles:
            scores = [
                done[(self.key(system), item.id)].get("score")
                for item in self.items
                if (self.key(system), item.id) in done
            ]
            values = [float(s) for s in scores if s is not None]
            if values and (best is None or sum(values) / len(values) > best[0]):
                best = (sum(values) / len(values), system)
        return None if best is None else best[1]

    async def _run_jobs(
        self, systems: Sequence[System], items: Sequence[EvalItem], observer: Observer
    ) -> None:
        done = self.log.completed()
        # One system's items side by side: the calls in flight then mostly go to the same
        # models, which a local model decodes as one batch (alternating models cannot).
        jobs = [
            (system, item)
            for system in systems
            for item in items
            if (self.key(system), item.id) not in done
        ]
        if not jobs:
            return
        queue: asyncio.Queue[tuple[System, EvalItem]] = asyncio.Queue()
        for job in jobs:
            queue.put_nowait(job)
        mixtures = {s.name: Mixture(s.spec, self.registry) for s in systems}

        async def worker() -> None:
            while not queue.empty():
                system, item = queue.get_nowait()
                record = await self.run_item(system, mixtures[system.name], item)
                self.log.append(record)
                observer.finished(record)
                self._fresh += 1
                if self.options.report_every and self._fresh % self.options.report_every == 0:
                    self.write_report_quietly()

        workers = min(self.options.concurrency, len(jobs))
        await asyncio.gather(*(worker() for _ in range(workers)))

    async def run_item(self, system: System, mixture: Mixture, item: EvalItem) -> dict[str, Any]:
        """Answer ``item`` with ``system`` (every turn) and score it: one log record."""
        record: dict[str, Any] = {
            "task": self.task.name,
            "system": system.name,
            "key": self.key(system),
            "item_id": item.id,
            "category": item.category,
        }
        history: list[Message] = []
        results: list[Result] = []
        timings = []
        run_ids: list[str] = []
        try:
            for turn in range(len(item.turns)):
                history.append(Message("user", self.task.user_message(item, turn, self.prompts)))
                with recording_hits() as hits:
                    result = await self._answer(system, mixture, history, run_ids)
                results.append(result)
                timings.append(replayed_timing(result, hits))
                history.append(Message("assistant", result.output))
        except ConfigError:
            raise  # a broken setup fails every item: stop instead of logging each failure
        except MoAError as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
        record["prompts"] = [m.content for m in history if m.role == "user"]
        record["outputs"] = [r.output for r in results]
        record["output"] = results[-1].output if results else None
        record.update(self._accounting(results, timings))
        record["calls"] = [c for turn, r in enumerate(results) for c in _call_records(r, turn)]
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

    @staticmethod
    def _accounting(results: Sequence[Result], timings: Sequence[Any]) -> dict[str, Any]:
        usage = Usage.sum(r.usage for r in results)
        costs = [r.cost for r in results if r.cost is not None]
        return {
            "usage": usage.to_dict(),
            "cost": sum(costs) if costs else None,
            "latency_s": round(sum(t.latency_s for t in timings), 4),
            "ttft_s": round(timings[0].ttft_s, 4) if timings and timings[0].ttft_s else None,
            "latency_source": "replayed" if any(t.replayed for t in timings) else "measured",
        }

    async def _score(self, record: dict[str, Any], item: EvalItem, results: list[Result]) -> None:
        output = results[-1].output
        if self.task.kind == "exact":
            record["gold"] = item.answer
            if item.choices:
                record["choices"] = list(item.choices)
            score_exact_record(record)
        elif self.task.kind == "code":
            await score_code_record(record, item)
        elif self.task.kind == "pairwise":
            assert self.judge is not None
            verdict = await self.judge.pairwise(item.turns[0], output, item.references[0])
            record.update(
                score=verdict.preference,
                judge=verdict.to_dict(),
                output_chars=len(output),
                reference_chars=len(item.references[0]),
                dataset=item.meta.get("dataset", ""),
            )
        else:
            assert self.judge is not None
            grade = await self.judge.grade(item, [r.output for r in results])
            record.update(score=grade.score, judge=grade.to_dict())

    # -- files ------------------------------------------------------------------------------

    def write_run_info(self) -> None:
        info = {
            "task": self.task.name,
            "task_kind": self.task.kind,
            "data": self.options.data,
            "items": len(self.items),
            "item_ids": [i.id for i in self.items],
            "command": self.options.command or " ".join(sys.argv),
            "judge": self.options.judge,
            "self_moa_of": self.self_moa_of,
            "cache": None if self.options.cache is None else str(self.options.cache),
            "generation": self.options.generation.__dict__,
            "systems": [{**s.describe(), "key": self.key(s)} for s in self.systems],
        }
        path = self.options.out / "run.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", "utf-8")

    def write_report_quietly(self) -> None:
        """Refresh the report mid-run; a failure here must not stop the run."""
        from moa.eval.report import write_report

        try:
            write_report(self.options.out)
        except Exception as exc:  # the run matters more than an intermediate report
            print(f"(report not refreshed: {exc})", file=sys.stderr)


def _call_records(result: Result, turn: int) -> list[dict[str, Any]]:
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
            "finish_reason": call.finish_reason,
        }
        for call in result.calls()
    ]
