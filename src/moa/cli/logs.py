"""``moa logs``: list, search, show, export and replay the runs in the run history."""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from moa.cli.common import ConfigOption, PresetOption, choose_config, err_console, reporting_errors
from moa.cli.recording import LogContentOption, NoLogOption, recorded_stream, run_log
from moa.cli.render import EventPrinter, run_events, summary_line
from moa.config import MixtureConfig, build_mixture, parse_config
from moa.engine.events import Done
from moa.errors import ConfigError
from moa.history import HistorySettings, HistoryStore, RunFilter, StoredRun
from moa.history.settings import default_history_path

__all__ = ["logs_app"]

logs_app = typer.Typer(
    help="The run history: every run of moa run, moa chat and moa serve, searchable.\n\n"
    "moa logs lists recent runs; moa logs -q TEXT searches questions and answers.",
    invoke_without_command=True,
)

QueryOption = Annotated[
    str | None,
    typer.Option(
        "--query", "-q", help='Full-text search of questions and answers (words, "a phrase", OR).'
    ),
]
MixtureOption = Annotated[str | None, typer.Option("--mixture", "-m", help="Only this mixture.")]
ModelOption = Annotated[
    str | None,
    typer.Option("--model", help="Only runs that called this model (or part of an id)."),
]
SinceOption = Annotated[
    str | None,
    typer.Option("--since", help="Only runs since: a date (2025-01-31) or an age (30m, 12h, 7d)."),
]
UntilOption = Annotated[
    str | None, typer.Option("--until", help="Only runs before then (same forms as --since).")
]
FailedOption = Annotated[
    bool, typer.Option("--failed", help="Only runs with a failed call, an error or a cancel.")
]
SourceOption = Annotated[
    str | None, typer.Option("--source", help="Only runs from cli, chat, server, replay or eval.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _when(value: str | None, option: str) -> float | None:
    if value is None:
        return None
    match = _AGO.match(value.strip())
    if match:
        return time.time() - float(match.group(1)) * _UNIT[match.group(2)]
    try:
        return datetime.fromisoformat(value.strip()).timestamp()
    except ValueError:
        raise ConfigError(
            f"{option} {value!r}: give a date or time (2025-01-31, 2025-01-31T14:00) "
            "or an age (30m, 12h, 7d)"
        ) from None


def _open() -> HistoryStore:
    return HistoryStore(default_history_path(), create=False)


def _filter(
    query: str | None,
    mixture: str | None,
    model: str | None,
    since: str | None,
    until: str | None,
    failed: bool,
    source: str | None,
    limit: int | None,
) -> RunFilter:
    return RunFilter(
        query=query,
        mixture=mixture,
        model=model,
        since=_when(since, "--since"),
        until=_when(until, "--until"),
        failed=failed,
        source=source,
        limit=limit,
    )


def _first_words(text: str, width: int = 48) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _table(runs: list[StoredRun], title: str) -> Table:
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for name in ("id", "time", "mixture", "question"):
        table.add_column(name, no_wrap=name != "question", overflow="ellipsis")
    for name in ("tokens", "cost", "latency", "failures"):
        table.add_column(name, justify="right", no_wrap=True)
    for run in runs:
        row = run.row
        when = datetime.fromtimestamp(row["created"]).strftime("%m-%d %H:%M")
        tokens = (row["prompt_tokens"] or 0) + (row["completion_tokens"] or 0)
        cost = "" if row["cost"] is None else f"${row['cost']:.4f}"
        failures = str(row["failures"]) if row["failures"] else ""
        if row["cancelled"]:
            failures = (failures + " cancelled").strip()
        question = _first_words(row["question"]) if row["content"] == "full" else "(not kept)"
        table.add_row(
            run.id[:10],
            when,
            Text(row["mixture"]),
            Text(question),
            f"{tokens:,}",
            cost,
            f"{row['latency_s']:.2f}s",
            Text(failures, style="red") if failures else "",
        )
    return table


@logs_app.callback()
def logs(
    ctx: typer.Context,
    query: QueryOption = None,
    mixture: MixtureOption = None,
    model: ModelOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    failed: FailedOption = False,
    source: SourceOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many runs.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List recent runs, newest first (the filters combine)."""
    if ctx.invoked_subcommand is not None:
        return
    with reporting_errors():
        where = _filter(query, mixture, model, since, until, failed, source, limit)
        store = _open()
        runs = store.runs(where)
        total = store.count()
        store.close()
    if as_json:
        typer.echo(json.dumps([run.summary() for run in runs], indent=2, ensure_ascii=False))
        return
    title = f"{len(runs)} of {total} runs in {escape(str(store.path))}"
    Console(highlight=False).print(_table(runs, title))


def show_run(run: StoredRun, console: Console, out: object = None) -> None:
    """Print ``run`` the way ``--show-layers`` prints a live one."""
    row = run.row
    when = datetime.fromtimestamp(row["created"]).strftime("%Y-%m-%d %H:%M:%S")
    replay = f", replay of {row['replay_of'][:10]}" if row["replay_of"] else ""
    header = (
        f"run {run.id} · {when} · {row['source']}{replay} · mixture {row['mixture']} "
        f"({row['mixture_hash']}) · trace {row['trace_id']}"
    )
    console.print(Text(header, style="dim"))
    for message in run.messages:
        console.print(Panel(Text(message.content), title=message.role, border_style="dim"))
    printer = EventPrinter(show_layers=True, out=out)  # type: ignore[arg-type]
    printer.console = console
    result = run.result()
    if result is not None:
        events = run_events(result.layers, result.extra_calls, result.aggregator, result)
    else:
        calls = run.calls()
        aggregators = [c for c in calls if c.role == "aggregator"]
        events = run_events(run.layers(), (), aggregators[-1] if aggregators else None)
    for event in events:
        printer.handle(event)
    if result is None:
        reason = row["error"] or "cancelled before it finished"
        console.print(Text(f"no answer: {reason}", style="bold red"))
    if row["content"] != "full":
        console.print("[dim]recorded with --log-content none: no messages or answers kept[/]")


@logs_app.command("show")
def show(
    run_id: Annotated[str, typer.Argument(help="The run's id (a unique prefix is enough).")],
    as_json: JsonOption = False,
) -> None:
    """Show one run: its conversation, every layer's answers and the final answer."""
    with reporting_errors():
        store = _open()
        run = store.get(run_id)
        store.close()
    if as_json:
        typer.echo(json.dumps(run.to_dict(), indent=2, ensure_ascii=False))
        return
    show_run(run, Console(stderr=True, highlight=False))


@logs_app.command("export")
def export(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    query: QueryOption = None,
    mixture: MixtureOption = None,
    model: ModelOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    failed: FailedOption = False,
    source: SourceOption = None,
) -> None:
    """Write every matching run, calls and messages included, as JSON Lines (one run a line)."""
    with reporting_errors():
        where = _filter(query, mixture, model, since, until, failed, source, None)
        store = _open()
        sink = output.open("w", encoding="utf-8") if output else sys.stdout
        count = 0
        try:
            for run in store.iter_runs(where):
                sink.write(json.dumps(run.to_dict(), ensure_ascii=False) + "\n")
                count += 1
        finally:
            if output:
                sink.close()
            store.close()
    if output:
        err_console.print(f"{count} run(s) written to {escape(str(output))}", highlight=False)


def _replay_config(run: StoredRun, preset: str | None, config: Path | None) -> MixtureConfig:
    if preset or config:
        return choose_config(preset, config)
    import yaml

    return parse_config(yaml.safe_load(run.row["mixture_yaml"]), f"run {run.id[:10]}")


@logs_app.command("replay")
def replay(
    run_id: Annotated[str, typer.Argument(help="The run to replay (a unique prefix is enough).")],
    preset: PresetOption = None,
    config: ConfigOption = None,
    no_log: NoLogOption = False,
    log_content: LogContentOption = "full",
) -> None:
    """Ask a past run's conversation again, with the same mixture or another one.

    Without --preset/--config the run's own mixture runs again, with the providers it
    had (keys are read from their environment variables again). The old and the new answer are
    shown side by side; the new run is recorded with a link to the old one.
    """
    with reporting_errors():
        store = _open()
        old = store.get(run_id)
        store.close()
        if old.row["content"] != "full":
            raise ConfigError(
                f"run {old.id[:10]} was recorded with --log-content none: "
                "its conversation was not kept"
            )
        chosen = _replay_config(old, preset, config)
        mixture = build_mixture(chosen)
        new = None
        with run_log(chosen, no_log=no_log, content=log_content) as log:
            events = recorded_stream(
                mixture,
                list(old.messages),
                log,
                source="replay",
                config=chosen,
                replay_of=old.id,
            )
            for event in events:
                if isinstance(event, Done):
                    new = event.result
    assert new is not None
    table = Table(box=None, expand=True, show_lines=False)
    table.add_column(Text(f"before: {old.row['mixture']} (run {old.id[:10]})"), ratio=1)
    table.add_column(Text(f"now: {new.mixture}"), ratio=1)
    table.add_row(
        Text(old.row["output"] or f"(no answer: {old.row['error'] or 'cancelled'})"),
        Text(new.output),
    )
    old_stats = Text(
        f"{old.row['prompt_tokens'] + old.row['completion_tokens']:,} tokens; "
        f"{old.row['latency_s']:.2f}s",
        style="dim",
    )
    table.add_row(old_stats, Text(summary_line(new), style="dim"))
    Console(highlight=False).print(table)


@logs_app.command("prune")
def prune(
    older_than: Annotated[
        float, typer.Option("--older-than", min=0.0, help="Delete runs older than this many days.")
    ],
) -> None:
    """Delete old runs now (MOA_HISTORY_DAYS does it whenever a command or server starts)."""
    with reporting_errors():
        store = _open()
        removed = store.prune(older_than_days=older_than)
        store.close()
    typer.echo(f"{removed} run(s) removed from {store.path}")


@logs_app.command("path")
def path() -> None:
    """Print where the run history is (set MOA_HOME to move it)."""
    typer.echo(str(HistorySettings.from_env().path))
