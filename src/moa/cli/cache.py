"""``moa cache``: what the call cache holds, and call logs to carry its calls elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from moa.cli.common import reporting_errors
from moa.errors import ConfigError
from moa.providers.cache import DEFAULT_CACHE, SQLiteCallStore

__all__ = ["cache_app"]

cache_app = typer.Typer(
    help="The call cache of moa eval and moa select: show it, export or import call logs.",
    invoke_without_command=True,
)

CacheOption = Annotated[
    Path, typer.Option("--cache", help="The call cache file (SQLite).", show_default=True)
]


def _store(path: Path, *, must_exist: bool) -> SQLiteCallStore:
    store = SQLiteCallStore(path)
    if must_exist and not store.path.is_file():
        raise ConfigError(f"no call cache at {str(store.path)!r} (give --cache PATH)")
    return store


@cache_app.callback()
def cache(ctx: typer.Context) -> None:
    """Show how many calls the default cache holds, per model (``moa cache show``)."""
    if ctx.invoked_subcommand is None:
        show(DEFAULT_CACHE)


@cache_app.command("show")
def show(path: CacheOption = DEFAULT_CACHE) -> None:
    """Show how many calls the cache holds, per model."""
    console = Console(highlight=False)
    with reporting_errors():
        store = _store(path, must_exist=True)
        counts = store.counts()
        store.close()
    total = sum(n for n, _ in counts.values())
    title = f"{total} calls in {escape(str(store.path))}"
    table = Table(title=title, title_justify="left", box=None)
    table.add_column("model id", style="bold")
    table.add_column("calls", justify="right")
    table.add_column("completion tokens", justify="right")
    for model, (n, tokens) in counts.items():
        table.add_row(Text(model), str(n), f"{tokens:,}")
    console.print(table)


@cache_app.command("export")
def export(
    file: Annotated[Path, typer.Argument(help="The call log to write (.jsonl, or .jsonl.gz).")],
    path: CacheOption = DEFAULT_CACHE,
    models: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Only this model id's calls (repeatable)."),
    ] = None,
    excluding: Annotated[
        list[Path] | None,
        typer.Option(
            "--except",
            help="Leave out the calls this call log already holds, with the same answer "
            "(repeatable), e.g. the logs of the reports a run built on.",
        ),
    ] = None,
) -> None:
    """Write the cache's calls to a call log, e.g. to commit beside a report."""
    from moa.providers.cache_file import export_calls

    with reporting_errors():
        store = _store(path, must_exist=True)
        count = export_calls(store, file, models=models or (), excluding=excluding or ())
        store.close()
    Console(stderr=True, highlight=False).print(f"exported {count} calls to {escape(str(file))}")


@cache_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="A call log written by 'moa cache export'.")],
    path: CacheOption = DEFAULT_CACHE,
) -> None:
    """Add a call log's calls to the cache (calls already there are kept as they are)."""
    from moa.providers.cache_file import import_calls

    with reporting_errors():
        store = _store(path, must_exist=False)
        added, total = import_calls(store, file)
        store.close()
    Console(stderr=True, highlight=False).print(
        f"imported {added} of {total} calls into {escape(str(store.path))} "
        f"({total - added} were there)"
    )
