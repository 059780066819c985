"""The ``moa`` command: ``moa "question"`` runs the default mixture; subcommands do the rest."""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import sys

import typer

from moa import __version__
from moa.cli.batch import batch_command
from moa.cli.bench import bench_app
from moa.cli.cache import cache_app
from moa.cli.common import unwrap_help
from moa.cli.eval import eval_command
from moa.cli.judge import judge_app
from moa.cli.logs import logs_app
from moa.cli.models import models_app
from moa.cli.run import chat, run
from moa.cli.select import select_command
from moa.cli.serve import serve
from moa.cli.strategies import strategies

__all__ = ["app", "main"]

app = typer.Typer(
    name="moa",
    help=(
        "Mixture-of-Agents: several LLMs answer in layers, an aggregator writes one answer.\n\n"
        'moa "question" is short for moa run "question" (the local preset unless told otherwise).'
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(run)
app.command("chat")(chat)
app.command("eval")(eval_command)
app.command("batch")(batch_command)
app.command("serve")(serve)
app.command("strategies")(strategies)
app.command("select")(select_command)
app.add_typer(bench_app, name="bench")
app.add_typer(models_app, name="models")
app.add_typer(cache_app, name="cache")
app.add_typer(judge_app, name="judge")
app.add_typer(logs_app, name="logs")
unwrap_help(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"moa {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Mixture-of-Agents."""


def _subcommands() -> set[str]:
    names = {c.name for c in app.registered_commands if c.name}
    names |= {g.name for g in app.registered_groups if g.name}
    return names


_ROOT_OPTIONS = frozenset(("--help", "--version"))


def main(argv: list[str] | None = None) -> None:
    """Entry point: anything but a command or ``--help``/``--version`` is ``moa run ...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    _report_crashes()
    _log_to_stderr(os.environ.get("MOA_LOG", ""))
    if args and args[0] not in _subcommands() and args[0] not in _ROOT_OPTIONS:
        args.insert(0, "run")
    app(args=args, prog_name="moa")


_LEVELS = ("debug", "info", "warning", "error")


def _report_crashes() -> None:
    """A crash inside native code (llama.cpp) prints every thread's Python stack to stderr.

    Such a crash ends the process before any Python error handling can run; without
    this it would leave only the shell's exit status (139 for SIGSEGV).
    """
    if faulthandler.is_enabled():
        return
    with contextlib.suppress(AttributeError, ValueError, OSError):  # stderr without a file
        faulthandler.enable(file=sys.stderr, all_threads=True)


def _log_to_stderr(level: str) -> None:
    """``$MOA_LOG`` (debug, info, warning, error): the library's log lines go to stderr."""
    if not level:
        return
    if level.lower() not in _LEVELS:
        typer.echo(f"MOA_LOG must be one of {', '.join(_LEVELS)}, not {level!r}", err=True)
        raise SystemExit(2)
    root = logging.getLogger("moa")
    root.setLevel(level.upper())
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):  # once per process
        handler = _StderrHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        root.addHandler(handler)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``$MOA_LOG`` adds."""
