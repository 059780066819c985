"""``moa bench``: one command per benchmark module of :mod:`moa.bench`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer

from moa.bench import batch, latency, overhead, robustness, server, soak
from moa.cli.common import reporting_errors

__all__ = ["bench_app"]

bench_app = typer.Typer(help="Measure the engine itself.", no_args_is_help=True)


def _reported(command: Callable[..., Any]) -> Callable[..., Any]:
    """The command, with a library error (bad data, config or model) as one line, not a trace."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        with reporting_errors():
            return command(*args, **kwargs)

    return run


for name, module in [
    ("overhead", overhead),
    ("latency", latency),
    ("server", server),
    ("batch", batch),
    ("soak", soak),
    ("robustness", robustness),
]:
    bench_app.command(name)(_reported(module.command))
