"""``moa bench``: one command per benchmark module of :mod:`moa.bench`."""

from __future__ import annotations

import typer

from moa.bench import batch, latency, overhead, robustness, server, soak

__all__ = ["bench_app"]

bench_app = typer.Typer(help="Measure the engine itself.", no_args_is_help=True)
bench_app.command("overhead")(overhead.command)
bench_app.command("latency")(latency.command)
bench_app.command("server")(server.command)
bench_app.command("batch")(batch.command)
bench_app.command("soak")(soak.command)
bench_app.command("robustness")(robustness.command)
