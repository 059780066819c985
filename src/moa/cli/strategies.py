"""``moa strategies``: the registered strategies, their options, and the shipped role prompts."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from moa.engine.strategy import get_strategy, strategy_names

__all__ = ["strategies"]


def _default(field: Any) -> str:
    if field.default_factory is not None:
        return repr(field.default_factory())
    if field.default is PydanticUndefined:
        return "(required)"
    return repr(field.default)


def _options_table(name: str, options: type[BaseModel]) -> Table:
    table = Table(title=f"strategy: {{type: {escape(name)}, ...}}", title_justify="left")
    table.add_column("option")
    table.add_column("default")
    table.add_column("meaning")
    for field_name, field in options.model_fields.items():
        meaning = (field.description or "").strip().replace("``", "`")
        table.add_row(field_name, Text(_default(field)), Text(meaning))
    return table


def strategies(
    name: Annotated[
        str | None, typer.Argument(help="Show this strategy's options (e.g. self-moa).")
    ] = None,
) -> None:
    """List the strategies a config's `strategy: {type: ...}` block can name."""
    console = Console(highlight=False)
    if name is not None:
        try:
            entry = get_strategy(name)
        except KeyError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc.args[0]))}")
            raise typer.Exit(2) from exc
        console.print(Text(entry.summary))
        console.print(_options_table(name, entry.options))
        if "roles" in entry.options.model_fields:
            from moa.strategies.common import role_names

            console.print(Text(f"shipped roles: {', '.join(role_names())}"))
        return
    table = Table("strategy", "what it does")
    for strategy in strategy_names():
        table.add_row(strategy, Text(get_strategy(strategy).summary))
    console.print(table)
    console.print("[dim]moa strategies NAME shows its options; docs/strategies.md has examples[/]")
