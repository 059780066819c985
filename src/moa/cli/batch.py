"""``moa batch``: a mixture over a whole file of requests, here or on a Ray cluster."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from moa.cli.common import (
    ConfigOption,
    PresetOption,
    RayActorCpus,
    RayActors,
    RayAddress,
    choose_config,
    engine_choice,
    reporting_errors,
    stopping_on_sigterm,
)
from moa.config import MixtureConfig
from moa.engine.spec import AgentSpec
from moa.errors import ConfigError
from moa.providers.cache import DEFAULT_CACHE

__all__ = ["batch_command"]


class _BatchProgress:
    """A bar with ETA, tokens and cost on a terminal; a line every few seconds otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[usage]}"),
            console=console,
            disable=not console.is_terminal,
        )
        self.task_id = self.progress.add_task("batch", total=None, usage="")
        self.started = time.monotonic()
        self.logged = self.started
        self.total = 0

    def start(self, total: int, resumed: int) -> None:
        self.total = total
        self.progress.update(self.task_id, total=total, completed=resumed)
        self.progress.start()
        if resumed:
            self.console.print(f"resuming: {resumed} of {total} requests already done")

    def advance(self, summary: Any) -> None:
        usage = f"{summary.tokens:,} tok" + _cost_text(summary.cost, " ")
        if summary.failed:
            usage += f" [red]{summary.failed} failed[/]"
        self.progress.update(self.task_id, advance=1, usage=usage)
        now = time.monotonic()
        if not self.console.is_terminal and now - self.logged >= 5:
            self.logged = now
            finished = summary.resumed + summary.done + summary.failed
            self.console.print(f"[{finished}/{self.total}] {usage}")

    def stop(self) -> None:
        self.progress.stop()


def _cost_text(cost: float | None, sep: str = "") -> str:
    return "" if cost is None else f"{sep}${cost:.4f}"


def _config(preset: str | None, config: Path | None, model: str | None) -> MixtureConfig:
    if model is None:
        return choose_config(preset, config)
    if preset is not None or config is not None:
        raise ConfigError("give one of --model, --preset and --config")
    return MixtureConfig(name=model, aggregator=AgentSpec(model=model))


def batch_command(
    input_path: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT",
            help="Batch API requests (.jsonl), or a table (.jsonl, .csv, .parquet) of prompts.",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="Batch API output (.jsonl), or the table with answers."
        ),
    ],
    preset: PresetOption = None,
    config: ConfigOption = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="One model alone, as provider:model (no mixture)."),
    ] = None,
    column: Annotated[
        str | None,
        typer.Option(help="A table's prompt column (default: messages, else prompt)."),
    ] = None,
    engine: Annotated[
        str, typer.Option(help="local (this process) or ray (Ray Data actors).")
    ] = "local",
    concurrency: Annotated[
        int, typer.Option(min=1, help="Requests in flight (per actor with --engine ray).")
    ] = 8,
    actors: RayActors = 2,
    address: RayAddress = None,
    actor_cpus: RayActorCpus = 0.5,
    cache: Annotated[
        Path, typer.Option(help="The call cache (SQLite) that answers repeated calls.")
    ] = DEFAULT_CACHE,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Call every model anew.")] = False,
    max_tokens: Annotated[
        int | None, typer.Option(min=1, help="max_tokens of requests made from table rows.")
    ] = None,
    system: Annotated[
        str | None,
        typer.Option("--system", "-s", help="A system prompt for requests made from table rows."),
    ] = None,
) -> None:
    """Answer every request of INPUT with a mixture; rerun the same command to resume.

    Finished requests are written (and flushed) one by one, so Ctrl-C keeps them
    and a rerun sends only the rest; repeated calls are answered by the call cache.
    """
    console = Console(stderr=True, highlight=False)
    with reporting_errors():
        from moa.batch import BatchOptions, ConfigMixture, LocalEngine, RayEngine, run_batch

        chosen = engine_choice(engine)
        mixture_config = _config(preset, config, model)
        defaults: dict[str, Any] = {} if max_tokens is None else {"max_tokens": max_tokens}
        options = BatchOptions(
            input=input_path,
            output=output,
            column=column,
            model=mixture_config.name,
            defaults=defaults,
            system=system,
        )
        # Absolute: Ray actors open the cache from their own working folder.
        factory = ConfigMixture(mixture_config, None if no_cache else cache.expanduser().resolve())
        runner = (
            LocalEngine(concurrency=concurrency)
            if chosen == "local"
            else RayEngine(
                actors=actors, concurrency=concurrency, address=address, actor_cpus=actor_cpus
            )
        )
        progress = _BatchProgress(console)
        try:
            with stopping_on_sigterm():
                summary = run_batch(options, factory, runner, progress)
        except KeyboardInterrupt:
            progress.stop()
            console.print("[yellow]interrupted[/]: finished requests are kept; rerun to resume")
            raise typer.Exit(130) from None
        progress.stop()
        console.print(
            f"{summary.done} done, {summary.failed} failed"
            + (f", {summary.resumed} from earlier runs" if summary.resumed else "")
            + f"; {summary.tokens:,} tokens{_cost_text(summary.cost, ', ')}"
            + f"; {summary.wall_s:.1f}s wall time"
        )
        if summary.complete:
            console.print(f"output: {escape(str(output))}")
