"""``moa select``: pick agents and a mixture shape for one task or several, checked on held-out."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from moa.cli.common import (
    CacheOnlyOption,
    JudgeProtocolOption,
    RecordCallsOption,
    command_line,
    progress_bar,
    recorded_calls,
    reporting_errors,
    stopping_on_sigterm,
)
from moa.cli.eta import PacedEta
from moa.config import load_endpoints
from moa.errors import ConfigError

if TYPE_CHECKING:
    from moa.select.evaluate import Outcome

__all__ = ["select_command"]


class _ItemProgress:
    """A rich bar per configuration on a terminal; one plain line per item otherwise (logs).

    The plain ETA is paced by the items that cost time: those answered from the
    call cache arrive at once and would make it far too short.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self.bar = progress_bar(console)
        self.task_id = self.bar.add_task("", total=None)
        self.name = ""
        self.eta = PacedEta()

    def __call__(self, name: str, done: int, total: int, outcome: Outcome) -> None:
        if name != self.name or done == 1:
            self.name = name
            self.eta.restart()
            self.bar.reset(self.task_id, total=total, description=escape(name))
        else:
            self.eta.arrived()
        self.bar.update(self.task_id, completed=done)
        if self.live:
            return
        score = "-" if outcome.score is None else f"{outcome.score:g}"
        score = "error" if outcome.error else score
        self.console.print(
            f"  [{done}/{total}] {escape(name)} item {escape(outcome.item_id)}: score {score}, "
            f"{outcome.latency_s:.1f}s; ETA {self.eta.left(total - done)}",
            highlight=False,
        )

    def __enter__(self) -> _ItemProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


def select_command(
    ctx: typer.Context,
    models: Annotated[
        list[str],
        typer.Option("--model", "-m", help="A candidate model id (repeat for each one)."),
    ],
    tasks: Annotated[
        list[str],
        typer.Option(
            "--task",
            "-t",
            help="gsm8k, mmlu, humaneval, alpaca_eval, mt_bench. Repeat it to choose one "
            "configuration for several tasks, each with its own --data.",
        ),
    ],
    data: Annotated[
        list[str],
        typer.Option(
            "--data",
            "-d",
            help="The data file or directory of each --task, in the same order (one per --task); "
            "'default' for the data a task ships with (humaneval).",
        ),
    ],
    floors: Annotated[
        list[str] | None,
        typer.Option(
            "--floor",
            help="Several tasks only: the points a configuration may lose to a task's best "
            "single model (lower bound of the 95% interval of the held-out difference). "
            "N for every task (default 2), TASK=N for one; repeatable.",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Where select.yaml, report.md, select.json go.")
    ] = Path("select-out"),
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="A config whose providers:/local: blocks to use."),
    ] = None,
    dev: Annotated[int, typer.Option(help="Items searched on.", min=1)] = 30,
    heldout: Annotated[
        list[str] | None,
        typer.Option(
            "--heldout",
            help="Items the choice is verified on, after the dev split (default 50). N for "
            "every task, TASK=N for one (tasks differ in size: humaneval=114 beside gsm8k=150); "
            "repeatable.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the shuffle that carves the splits.")] = 0,
    limit: Annotated[
        list[str] | None,
        typer.Option(
            "--limit",
            "-n",
            help="Carve the splits from the first N items only (the items a `moa eval --limit "
            "N` run answers, so the two share cached calls). Without it, the splits are the "
            "first items of the whole data shuffled with --seed (the items `moa eval --shuffle "
            "--seed S` answers first). N for every task, TASK=N for one; repeatable.",
        ),
    ] = None,
    samples: Annotated[
        int, typer.Option(help="Answers per model in votes and Self-MoA (greedy + samples).", min=2)
    ] = 4,
    temperature: Annotated[float, typer.Option(help="Temperature of the samples.")] = 0.7,
    max_tokens: Annotated[int, typer.Option(help="max_tokens of every call.", min=1)] = 512,
    max_calls: Annotated[
        int | None, typer.Option(help="Budget: model calls per request.", min=1)
    ] = None,
    max_request_tokens: Annotated[
        int | None, typer.Option(help="Budget: tokens (prompt + completion) per request.", min=1)
    ] = None,
    max_latency: Annotated[
        float | None, typer.Option(help="Budget: seconds per request (critical path).")
    ] = None,
    sample_models: Annotated[
        int, typer.Option(help="How many of the best models get samples.", min=1)
    ] = 1,
    max_proposers: Annotated[int, typer.Option(help="Largest proposer subset.", min=2)] = 3,
    max_layers: Annotated[int, typer.Option(help="Most proposer layers in a MoA.", min=1)] = 1,
    max_evals: Annotated[
        int, typer.Option(help="Configurations needing new aggregator calls tried on dev.", min=0)
    ] = 4,
    finalists: Annotated[
        int, typer.Option(help="Runners-up that also answer the held-out items.", min=0)
    ] = 2,
    judge: Annotated[
        str | None, typer.Option(help="The judge model of judged tasks (alpaca_eval, mt_bench).")
    ] = None,
    judge_protocol: JudgeProtocolOption = "pairwise",
    embeddings: Annotated[
        bool, typer.Option("--embeddings", help="Also measure semantic diversity (MiniLM).")
    ] = False,
    cache: Annotated[
        Path | None, typer.Option(help="The call cache file (default ~/.cache/moa/calls.sqlite).")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not cache calls.")] = False,
    cache_only: CacheOnlyOption = False,
    record_calls: RecordCallsOption = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            min=1.0,
            help="Seconds one call may take, for every configuration (slow CPUs: an "
            "aggregation waiting in a large local batch can take longer than the default 300).",
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Items answered at once.", min=1)] = 1,
) -> None:
    """Measure each model, search mixtures under a budget, and recommend one (or a single model).

    With one task, the recommendation never scores below the best single model on the held-out
    split. With several (--task and --data repeated, in the same order), one configuration is
    chosen for all of them: it must stay within --floor points of each task's best single model
    (95% interval of the held-out difference), and ranks by the tasks it significantly improves.
    """
    from moa.select.candidates import Budget, Sampling
    from moa.select.multireport import multi_failed
    from moa.select.report import failed_count, failure_warning
    from moa.select.run import (
        DEFAULT_CACHE,
        MultiSelectRun,
        SelectRun,
        task_list,
        write_multi_outputs,
        write_outputs,
    )
    from moa.select.search import DEFAULT_HELDOUT, SearchOptions

    console = Console(stderr=True, highlight=False)
    with reporting_errors():
        several = task_list(tasks, data, floors or (), limit or (), heldout or ())
        options = SearchOptions(
            pool=tuple(models),
            budget=Budget(max_calls, max_request_tokens, max_latency),
            sampling=Sampling(max_tokens, temperature, samples),
            dev=dev,
            # Several tasks: each task's own size (TaskData), where given, in place of this one.
            heldout=(several[0].heldout if len(several) == 1 else None) or DEFAULT_HELDOUT,
            seed=seed,
            # Several tasks: each task's own limit (TaskData), in place of this one.
            limit=several[0].limit if len(several) == 1 else None,
            sample_models=sample_models,
            max_proposers=max_proposers,
            max_layers=max_layers,
            max_evals=max_evals,
            finalists=finalists,
        )
        if no_cache and cache is not None:
            raise ConfigError("give --cache or --no-cache, not both")
        if len(several) == 1 and floors:
            raise ConfigError("--floor applies to several tasks (--task given more than once)")
        base = load_endpoints(config) if config is not None else None
        store = None if no_cache else (cache or DEFAULT_CACHE)
        started = time.monotonic()

        def log(text: str) -> None:
            console.print(f"[dim]{time.monotonic() - started:7.0f}s[/] {escape(text)}")

        command = command_line(ctx, "moa", "select")
        if len(several) == 1:
            run = SelectRun(
                options,
                tasks[0],
                several[0].data,
                base=base,
                cache=store,
                cache_only=cache_only,
                judge=judge,
                judge_protocol=judge_protocol,
                embeddings=embeddings,
                concurrency=concurrency,
                timeout=timeout,
            )
            with (
                stopping_on_sigterm(),
                recorded_calls(record_calls, console, no_cache=no_cache),
                _ItemProgress(console) as progress,
            ):
                selection = asyncio.run(run.arun(log=log, progress=progress))
            paths = write_outputs(selection, run, out, command=command)
            verdict = selection.verdict
            failed = failed_count(selection)
        else:
            joint = MultiSelectRun(
                options,
                several,
                base=base,
                cache=store,
                cache_only=cache_only,
                judge=judge,
                judge_protocol=judge_protocol,
                embeddings=embeddings,
                concurrency=concurrency,
                timeout=timeout,
            )
            with (
                stopping_on_sigterm(),
                recorded_calls(record_calls, console, no_cache=no_cache),
                _ItemProgress(console) as progress,
            ):
                chosen = asyncio.run(joint.arun(log=log, progress=progress))
            paths = write_multi_outputs(chosen, joint, out, command=command)
            verdict = chosen.verdict
            failed = multi_failed(chosen)
    console.print(f"[bold]{escape(verdict)}[/]")
    if failed:
        console.print(f"[bold yellow]warning:[/] {escape(failure_warning(failed))}")
    for label, path in paths.items():
        console.print(f"{label}: {escape(str(path))}")
