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

Where the pairs run is the engine's business (``engine``): ``local`` answers
them on this process's event loop, ``ray`` on a pool of Ray actors (the same
:class:`~moa.batch.RayEngine` as ``moa batch``), each with its own
:class:`~moa.eval.worker.EvalWorker`. Everything else (the order of work,
Self-MoA, the log, the report, resuming) happens here, the same for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from moa.config import MixtureConfig
from moa.engine.mixture import Mixture, check_mixtures
from moa.engine.spec import MixtureSpec
from moa.errors import ConfigError
from moa.eval.datasets import EvalItem
from moa.eval.prompts import PromptSet
from moa.eval.records import ItemLog
from moa.eval.run_info import merged_run_info, read_run_info
from moa.eval.systems import (
    GenerationSettings,
    System,
    judge_key,
    judge_system,
    merged_provider_settings,
    proposer_baselines,
    resolve_system,
    self_moa_spec,
    unique,
)
from moa.eval.tasks import Task, get_task
from moa.eval.worker import EvalJob, EvalWorker, EvalWorkers, RegistryRecipe
from moa.history import HistorySettings, RunLog
from moa.providers.cache import DEFAULT_CACHE
from moa.providers.registry import ProviderRegistry

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
    judge_protocol: str = "pairwise"
    """How the judge compares (:data:`~moa.eval.judge.PROTOCOLS`)."""
    no_judge: bool = False
    """A judged task (``alpaca_eval``, ``mt_bench``) is answered but not judged: the report
    has each system's answers, calls, tokens and latencies, and no win rate or grade."""
    cache: Path | None = DEFAULT_CACHE
    """The call cache file; ``None`` turns caching off."""
    cache_only: bool = False
    """Answer every call from the cache; a call it lacks stops the run (no model is called)."""
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
    judge_validation: str | None = None
    """A ``judge-validation.json`` (``moa judge validate``) the report checks the judge with."""
    history: HistorySettings | None = None
    """Record every answered turn in this run history (``None``, the default: not recorded)."""
    engine: Literal["local", "ray"] = "local"
    """Where items run: this process, or a pool of Ray actors (``concurrency`` in each)."""
    actors: int = 2
    """``engine="ray"``: actors in the pool."""
    address: str | None = None
    """``engine="ray"``: the cluster to join (``None``: the session open here, or a new one)."""
    actor_cpus: float = 0.5
    """``engine="ray"``: CPUs Ray reserves per actor."""


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

    def __init__(
        self,
        options: EvalOptions,
        *,
        registry: ProviderRegistry | None = None,
        registry_factory: Callable[[], ProviderRegistry] | None = None,
    ) -> None:
        """``registry`` serves this process; ``registry_factory`` builds one in each Ray actor.

        Without them both come from the systems' configs (and the call cache).
        ``engine="ray"`` cannot ship a live ``registry``: give ``registry_factory``.
        """
        if options.concurrency < 1:
            raise ConfigError("--concurrency must be at least 1")
        if options.engine not in ("local", "ray"):
            raise ConfigError(f"--engine must be local or ray, not {options.engine!r}")
        if options.engine == "ray" and options.history is not None:
            raise ConfigError(
                "--log-history records runs from this process: use it with --engine local"
            )
        if options.engine == "ray" and registry is not None and registry_factory is None:
            raise ConfigError("engine='ray' builds providers in each actor: give registry_factory")
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
        recipe = registry_factory or self._registry_recipe([*configs, *judge_config])
        self.registry = registry or recipe()
        baselines = proposer_baselines(user, options.generation) if options.baselines else []
        self.systems: list[System] = [
            s.with_timeout(options.timeout) for s in unique([*user, *baselines])
        ]
        self.self_moa_wanted = (
            options.baselines and not options.no_judge and any(s.single for s in self.systems)
        )
        """Self-MoA follows the best single model, so it needs scores to pick one."""
        self._self_moa_added = False
        self.self_moa_of: str | None = None
        """The single model the automatic Self-MoA samples (chosen after the first block)."""
        self._fresh = 0
        self.judge = self._judge()
        self.log = ItemLog(options.out / "items.jsonl")
        self.run_log = RunLog(options.history) if options.history is not None else None
        self._context = self._run_context()
        protocol = options.judge_protocol
        self.worker = EvalWorker(
            self.task,
            self.prompts,
            self.registry,
            self.judge,
            run_log=self.run_log,
            judge_protocol=protocol,
        )
        """Answers the items in this process (``engine="local"``)."""
        self.workers = EvalWorkers(
            self.task.name, recipe, options.prompts_dir, self.judge, protocol
        )
        """Builds a worker in each Ray actor (``engine="ray"``)."""

    # -- setup ------------------------------------------------------------------------------

    def _registry_recipe(self, configs: Sequence[MixtureConfig]) -> RegistryRecipe:
        providers, local = merged_provider_settings(configs)
        cache = self.options.cache
        return RegistryRecipe(
            providers,
            local,
            None if cache is None else cache.expanduser().resolve(),
            self.options.cache_only,
        )

    def _judge_config(self) -> list[MixtureConfig]:
        options = self.options
        if self.task.kind in ("exact", "code"):
            if options.no_judge:
                raise ConfigError(f"--no-judge: task {self.task.name!r} is scored without a judge")
            return []
        if options.no_judge:
            if options.judge is not None or options.judge_validation is not None:
                raise ConfigError(
                    "--no-judge leaves the answers unjudged: drop --judge and "
                    "--judge-validation, or --no-judge"
                )
            return []
        if options.judge is None:
            raise ConfigError(
                f"task {self.task.name!r} needs a judge: give --judge with a model id "
                "(e.g. openai:gpt-4o), a preset or a config file; or --no-judge for the "
                "answers and their costs alone"
            )
        judge = judge_system(options.judge)
        return [judge.config] if judge.config is not None else []

    def _judge(self) -> MixtureSpec | None:
        """The judge's configuration (``None``: the task scores without one)."""
        if self.options.judge is None or self.task.kind in ("exact", "code"):
            return None
        return judge_system(self.options.judge, self.options.timeout).spec

    def judge_key(self) -> str | None:
        """The judge's key, which its validation (``moa judge validate``) must carry."""
        if self.judge is None:
            return None
        return judge_key(System("judge", self.judge), self.prompts, self.options.judge_protocol)

    def _run_context(self) -> dict[str, Any]:
        """What, besides a system's own configuration, decides its records."""
        context: dict[str, Any] = {
            "task": self.task.name,
            "templates": {name: self.prompts.get(name) for name in self.task.templates()},
        }
        if self.judge is not None:
            context["judge"] = self.judge.model_dump(
                mode="json", exclude={"name", "timeout", "retry", "deadline"}
            )
            context["judge_templates"] = self.options.prompts_dir and str(self.options.prompts_dir)
            if self.options.judge_protocol != "pairwise":  # pairwise runs keep their keys
                context["judge_protocol"] = self.options.judge_protocol
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
        specs = [s.spec for s in self.systems] + ([] if self.judge is None else [self.judge])
        check_mixtures(Mixture(spec, self.registry) for spec in specs)
        size = self.options.block or len(self.items)
        session = (
            self._ray().session() if self.options.engine == "ray" else contextlib.nullcontext()
        )
        try:
            with session:
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
        info = read_run_info(self.options.out / "run.json")
        if not self.self_moa_wanted or info is None:
            return
        chosen = info.get("self_moa_of")
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

    def _ray(self) -> Any:
        from moa.batch.ray_engine import RayEngine

        return RayEngine(
            actors=self.options.actors,
            concurrency=self.options.concurrency,
            address=self.options.address,
            actor_cpus=self.options.actor_cpus,
        )

    async def _run_jobs(
        self, systems: Sequence[System], items: Sequence[EvalItem], observer: Observer
    ) -> None:
        done = self.log.completed()
        # One system's items side by side: the calls in flight then mostly go to the same
        # models, which a local model decodes as one batch (alternating models cannot).
        jobs = {
            f"{self.key(system)}/{item.id}": EvalJob(system, self.key(system), item)
            for system in systems
            for item in items
            if (self.key(system), item.id) not in done
        }
        if not jobs:
            return
        logged: set[tuple[str, str]] = set()

        def deliver(job: EvalJob, record: dict[str, Any]) -> None:
            if (job.key, job.item.id) in logged:
                return  # a Ray actor lost and its batch run again: the first record stands
            logged.add((job.key, job.item.id))
            self.log.append(record)
            observer.finished(record)
            self._fresh += 1
            if self.options.report_every and self._fresh % self.options.report_every == 0:
                self.write_report_quietly()

        if self.options.engine == "ray":
            self._ray().map(self.workers, jobs, deliver)
        else:
            from moa.batch.local import LocalEngine

            engine = LocalEngine(min(self.options.concurrency, len(jobs)))
            await engine.amap(self.worker, jobs, deliver)

    async def run_item(self, system: System, item: EvalItem) -> dict[str, Any]:
        """Answer ``item`` with ``system`` (every turn) and score it, in this process."""
        return await self.worker.run_item(system, self.key(system), item)

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
            "judge_key": self.judge_key(),
            "judge_protocol": self.options.judge_protocol if self.judge is not None else None,
            "judge_validation": self.options.judge_validation,
            "unjudged": self.options.no_judge,
            "prompts": None if self.options.prompts_dir is None else str(self.options.prompts_dir),
            "self_moa_of": self.self_moa_of,
            "cache": None if self.options.cache is None else str(self.options.cache),
            "generation": self.options.generation.__dict__,
            "systems": [{**s.describe(), "key": self.key(s)} for s in self.systems],
        }
        path = self.options.out / "run.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        info = merged_run_info(read_run_info(path), info)
        path.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", "utf-8")

    def write_report_quietly(self) -> None:
        """Refresh the report mid-run; a failure here must not stop the run."""
        from moa.eval.report import write_report

        try:
            write_report(self.options.out)
        except Exception as exc:  # the run matters more than an intermediate report
            print(f"(report not refreshed: {exc})", file=sys.stderr)
