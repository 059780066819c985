"""Set up and run a selection: data, registry with the call cache, judge; write its outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from moa.config import MixtureConfig
from moa.engine.mixture import Mixture
from moa.eval.judge import Judge
from moa.eval.prompts import PromptSet
from moa.eval.systems import GenerationSettings, resolve_system
from moa.eval.tasks import get_task
from moa.providers.cache import DEFAULT_CACHE, CachingRegistry, SQLiteCallStore
from moa.providers.registry import ProviderRegistry
from moa.select.diversity import minilm_embedder
from moa.select.evaluate import Evaluator, ItemProgress
from moa.select.report import config_yaml, markdown, summary
from moa.select.search import SearchOptions, Selection, run_search

__all__ = ["DEFAULT_CACHE", "SelectRun", "write_outputs"]


@dataclass(frozen=True)
class SelectRun:
    """One ``moa select``: the search options and where the data, cache and providers are."""

    options: SearchOptions
    task: str
    data: str
    base: MixtureConfig | None = None
    """A config whose ``providers:`` and ``local:`` blocks say how to reach the pool."""
    cache: Path | None = DEFAULT_CACHE
    judge: str | None = None
    embeddings: bool = False
    concurrency: int = 1

    def registry(self) -> ProviderRegistry:
        providers = dict(self.base.providers) if self.base else {}
        local = self.base.local if self.base else None
        if self.cache is None:
            return ProviderRegistry(providers, local)
        store = SQLiteCallStore(self.cache.expanduser())
        return CachingRegistry(providers, local, store=store)

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
        judge = None
        if self.judge is not None and task.kind != "exact":
            system = resolve_system(self.judge, GenerationSettings(temperature=0.0, seed=0))
            judge = Judge(Mixture(system.spec, registry), prompts)
        evaluator = Evaluator(
            task,
            registry,
            prompts=prompts,
            judge=judge,
            concurrency=self.concurrency,
            progress=progress,
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
    import json

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
