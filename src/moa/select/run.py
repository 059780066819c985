"""Set up and run a selection (one task or several): data, registry with the call cache, judge;
write its outputs."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from moa.config import Endpoints
from moa.engine.mixture import Mixture
from moa.errors import ConfigError
from moa.eval.judge import Judge
from moa.eval.prompts import PromptSet
from moa.eval.systems import GenerationSettings, resolve_system
from moa.eval.tasks import get_task
from moa.providers.cache import DEFAULT_CACHE, registry_with_cache
from moa.providers.registry import ProviderRegistry
from moa.select.diversity import minilm_embedder
from moa.select.evaluate import Evaluator, ItemProgress
from moa.select.floors import DEFAULT_FLOOR
from moa.select.multireport import multi_markdown, multi_summary
from moa.select.multitask import MultiSelection, run_multi_search
from moa.select.report import config_yaml, markdown, summary
from moa.select.search import SearchOptions, Selection, run_search

__all__ = [
    "DEFAULT_CACHE",
    "MultiSelectRun",
    "SelectRun",
    "TaskData",
    "task_list",
    "write_multi_outputs",
    "write_outputs",
]

T = TypeVar("T")


def _registry(base: Endpoints | None, cache: Path | None, cache_only: bool) -> ProviderRegistry:
    if base is None:
        return registry_with_cache(None, None, cache, cache_only)
    return registry_with_cache(base.providers, base.local, cache, cache_only)


def _judge(
    model: str | None,
    registry: ProviderRegistry,
    prompts: PromptSet,
    protocol: str,
    timeout: float | None = None,
) -> Judge | None:
    if model is None:
        return None
    system = resolve_system(model, GenerationSettings(temperature=0.0, seed=0))
    return Judge(Mixture(system.with_timeout(timeout).spec, registry), prompts, protocol)


@dataclass(frozen=True)
class SelectRun:
    """One ``moa select``: the search options and where the data, cache and providers are."""

    options: SearchOptions
    task: str
    data: str
    base: Endpoints | None = None
    """A config whose ``providers:`` and ``local:`` blocks say how to reach the pool."""
    cache: Path | None = DEFAULT_CACHE
    cache_only: bool = False
    """Answer every call from the cache; a call it lacks stops the selection."""
    judge: str | None = None
    judge_protocol: str = "pairwise"
    """How the judge compares (:data:`~moa.eval.judge.PROTOCOLS`)."""
    embeddings: bool = False
    concurrency: int = 1
    timeout: float | None = None
    """Seconds every call may take (slow CPUs); ``None``: each configuration's own."""

    def registry(self) -> ProviderRegistry:
        return _registry(self.base, self.cache, self.cache_only)

    async def arun(
        self,
        registry: ProviderRegistry | None = None,
        *,
        log: Callable[[str], None] = lambda _: None,
        progress: ItemProgress | None = None,
    ) -> Selection:
        task = get_task(self.task)
        items = task.load(self.data, None)
        registry = registry or self.registry()
        prompts = PromptSet()
        judge = (
            _judge(self.judge, registry, prompts, self.judge_protocol, self.timeout)
            if task.kind != "exact"
            else None
        )
        evaluator = Evaluator(
            task,
            registry,
            prompts=prompts,
            judge=judge,
            concurrency=self.concurrency,
            progress=progress,
            timeout=self.timeout,
        )
        embedder = minilm_embedder() if self.embeddings else None
        try:
            return await run_search(
                self.options, task, evaluator, items, log=log, embedder=embedder
            )
        finally:
            await registry.aclose()


def write_outputs(
    selection: Selection, run: SelectRun, out: Path, *, command: str = ""
) -> dict[str, Path]:
    """``select.yaml`` (ready for ``moa run --config``), ``report.md`` and ``select.json``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "config": out / "select.yaml",
        "report": out / "report.md",
        "json": out / "select.json",
    }
    assert selection.recommended is not None
    note = (
        f"Chosen by moa select on {run.task} ({len(selection.heldout_ids)} held-out items).\n"
        f'{selection.verdict}.\nUse: moa run --config {paths["config"].name} "question"'
    )
    paths["config"].write_text(
        config_yaml(selection.recommended, run.options.sampling, run.base, note), "utf-8"
    )
    paths["report"].write_text(markdown(selection, command=command, data=run.data), "utf-8")
    data = summary(selection)
    paths["json"].write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return paths


@dataclass(frozen=True)
class TaskData:
    """One task of a selection over several: its name, its data, its floor in points, the
    first how many items its splits are carved from (all when None), and its held-out
    split's size (the selection's ``heldout`` when None)."""

    name: str
    data: str
    floor: float = DEFAULT_FLOOR
    limit: int | None = None
    heldout: int | None = None


DEFAULT_DATA = "default"
"""``--data default``: the data a task ships with (HumanEval's 164 problems)."""


def _data(task: str, data: str) -> str:
    if data != DEFAULT_DATA:
        return data
    shipped = get_task(task).default_data
    if shipped is None:
        raise ConfigError(f"--data default: task {task} ships no data; give its file")
    return shipped()


def _floor(given: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigError(
            f"--floor {given}: give points of 0 or more, for every task (2.5) or one (mmlu=3)"
        )
    return value


def _items(flag: str) -> Callable[[str, str], int]:
    def parse(given: str, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise ConfigError(
                f"{flag} {given}: give a whole number of items of 1 or more, for every task "
                "(200) or one (gsm8k=200)"
            )
        return value

    return parse


def _per_task(
    flag: str,
    given: Sequence[str],
    names: Sequence[str],
    parse: Callable[[str, str], T],
) -> tuple[T | None, dict[str, T]]:
    """Values of a repeatable ``--flag``: at most one ``N`` for every task, and ``TASK=N``.

    Returns the value for every task (None when not given) and each named task's own."""
    default: T | None = None
    own: dict[str, T] = {}
    if len([g for g in given if "=" not in g]) > 1:
        raise ConfigError(f"{flag}: give at most one value for every task (N); others as TASK=N")
    for item in given:
        task, _, value = item.rpartition("=")
        if not task:
            default = parse(item, value)
            continue
        try:
            key = get_task(task.strip()).name
        except ConfigError:
            key = task.strip()
        if key not in names:
            raise ConfigError(f"{flag} {item}: {task} is not a --task ({', '.join(names)})")
        own[key] = parse(item, value)
    return default, own


def task_list(
    tasks: Sequence[str],
    data: Sequence[str],
    floors: Sequence[str] = (),
    limits: Sequence[str] = (),
    heldouts: Sequence[str] = (),
) -> tuple[TaskData, ...]:
    """Pair each ``--task`` with the ``--data`` in the same place, and give each its floor,
    limit and held-out size.

    A ``--floor``, ``--limit`` or ``--heldout`` is ``N`` (every task) or ``TASK=N`` (that
    task, over ``N``).
    """
    if len(data) != len(tasks):
        raise ConfigError(
            f"--data: give one per --task, in the same order "
            f"({len(tasks)} --task, {len(data)} --data)"
        )
    names = [get_task(t).name for t in tasks]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"--task {name} is given twice: give each task once")
    floor, floor_of = _per_task("--floor", floors, names, _floor)
    limit, limit_of = _per_task("--limit", limits, names, _items("--limit"))
    heldout, heldout_of = _per_task("--heldout", heldouts, names, _items("--heldout"))
    return tuple(
        TaskData(
            n,
            _data(n, d),
            floor_of.get(n, DEFAULT_FLOOR if floor is None else floor),
            limit_of.get(n, limit),
            heldout_of.get(n, heldout),
        )
        for n, d in zip(names, data, strict=True)
    )


@dataclass(frozen=True)
class MultiSelectRun:
    """One ``moa select`` over several tasks: one configuration chosen for all of them."""

    options: SearchOptions
    tasks: tuple[TaskData, ...]
    base: Endpoints | None = None
    cache: Path | None = DEFAULT_CACHE
    cache_only: bool = False
    """Answer every call from the cache; a call it lacks stops the selection."""
    judge: str | None = None
    judge_protocol: str = "pairwise"
    """How the judge compares (:data:`~moa.eval.judge.PROTOCOLS`)."""
    embeddings: bool = False
    concurrency: int = 1
    timeout: float | None = None
    """Seconds every call may take (slow CPUs); ``None``: each configuration's own."""

    def registry(self) -> ProviderRegistry:
        return _registry(self.base, self.cache, self.cache_only)

    async def arun(
        self,
        registry: ProviderRegistry | None = None,
        *,
        log: Callable[[str], None] = lambda _: None,
        progress: ItemProgress | None = None,
    ) -> MultiSelection:
        loaded = [(get_task(t.name), t.data) for t in self.tasks]
        items = {task.name: task.load(data, None) for task, data in loaded}
        registry = registry or self.registry()
        prompts = PromptSet()
        judge = _judge(self.judge, registry, prompts, self.judge_protocol, self.timeout)
        parts = {}
        for task, _ in loaded:
            evaluator = Evaluator(
                task,
                registry,
                prompts=prompts,
                judge=judge if task.kind != "exact" else None,
                concurrency=self.concurrency,
                progress=_prefixed(progress, task.name),
                timeout=self.timeout,
            )
            parts[task.name] = (evaluator, items[task.name])
        embedder = minilm_embedder() if self.embeddings else None
        floors = {t.name: t.floor for t in self.tasks}
        limits = {t.name: t.limit for t in self.tasks}
        heldouts = {t.name: t.heldout for t in self.tasks if t.heldout is not None}
        try:
            return await run_multi_search(
                self.options,
                parts,
                floors,
                log=log,
                embedder=embedder,
                limits=limits,
                heldouts=heldouts,
            )
        finally:
            await registry.aclose()


def _prefixed(progress: ItemProgress | None, task: str) -> ItemProgress | None:
    if progress is None:
        return None
    inner = progress
    return lambda name, done, total, outcome: inner(f"{task}: {name}", done, total, outcome)


def write_multi_outputs(
    selection: MultiSelection, run: MultiSelectRun, out: Path, *, command: str = ""
) -> dict[str, Path]:
    """The same three files as :func:`write_outputs`, for a selection over several tasks."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "config": out / "select.yaml",
        "report": out / "report.md",
        "json": out / "select.json",
    }
    assert selection.recommended is not None
    tasks = ", ".join(f"{s.task} ({len(s.heldout_ids)} held-out)" for s in selection.tasks)
    note = (
        f"Chosen by moa select on {tasks}.\n"
        f'{selection.verdict}.\nUse: moa run --config {paths["config"].name} "question"'
    )
    paths["config"].write_text(
        config_yaml(selection.recommended, run.options.sampling, run.base, note), "utf-8"
    )
    data = {t.name: t.data for t in run.tasks}
    paths["report"].write_text(multi_markdown(selection, command=command, data=data), "utf-8")
    numbers = multi_summary(selection, data=data)
    paths["json"].write_text(json.dumps(numbers, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return paths
