"""What every ``moa`` command shares: choosing a mixture, reporting errors, progress bars."""

from __future__ import annotations

import asyncio
import inspect
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal, TypeVar

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

from moa.config import DEFAULT_PRESET, MixtureConfig, load_config
from moa.errors import ConfigError, MoAError

__all__ = [
    "CacheOnlyOption",
    "ConfigOption",
    "JudgeProtocolOption",
    "PresetOption",
    "RayActorCpus",
    "RayActors",
    "RayAddress",
    "RecordCallsOption",
    "check_record_calls",
    "choose_config",
    "command_line",
    "err_console",
    "progress_bar",
    "recorded_calls",
    "reporting_errors",
    "stopping_on_sigterm",
    "unwrap_help",
]

err_console = Console(stderr=True)
T = TypeVar("T")

PresetOption = Annotated[
    str | None,
    typer.Option("--preset", "-p", help="A shipped preset (see `moa models`). Default: local."),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="A YAML mixture config file (overrides --preset)."),
]
JUDGE_PROTOCOLS = ("pairwise", "graded")
"""moa.eval.judge.PROTOCOLS, without importing the evaluation code for every command."""
JudgeProtocolOption = Annotated[
    str,
    typer.Option(
        "--judge-protocol",
        callback=lambda value: _one_of(value, JUDGE_PROTOCOLS, "--judge-protocol"),
        help="How the judge compares an answer with the reference: 'pairwise' (which is "
        "better, asked in both orders) or 'graded' (each graded 1-10 alone, the higher grade "
        "wins: no position to be biased by).",
    ),
]
CacheOnlyOption = Annotated[
    bool,
    typer.Option(
        "--cache-only",
        help="Replay the call cache only: a call it lacks stops the run with an error, and no "
        "model is ever called (none needs to be installed, no key to be set). With a report's "
        "call log imported, this shows the report reruns for free.",
    ),
]


RecordCallsOption = Annotated[
    Path | None,
    typer.Option(
        "--record-calls",
        help="Add every call this command used, answered by the call cache or made and "
        "stored, to this call log (.jsonl or .jsonl.gz; 'moa cache import' reads it), also "
        "when it is interrupted; a resumed run given the same file keeps the earlier calls.",
    ),
]


def check_record_calls(path: Path | None, *, no_cache: bool) -> None:
    """Refuse a ``--record-calls`` that could not be written, before any work is done."""
    if path is None:
        return
    if no_cache:
        raise ConfigError(
            "--record-calls writes the calls that go through the call cache: leave out --no-cache"
        )
    if path.exists():
        from moa.providers.cache_file import read_calls

        read_calls(path)  # a file that is not a call log is refused now, not after the run


@contextmanager
def recorded_calls(path: Path | None, console: Console, *, no_cache: bool) -> Iterator[None]:
    """Run the block noting the calls that go through the call cache; write them to ``path``."""
    check_record_calls(path, no_cache=no_cache)
    if path is None:
        yield
        return
    from moa.providers.cache import recording_calls
    from moa.providers.cache_file import write_recording

    with recording_calls() as recording:
        try:
            yield
        finally:
            total = write_recording(recording, path)
            console.print(
                f"call log {escape(str(path))}: {len(recording)} calls used by this run, "
                f"{total} in all",
                soft_wrap=True,
            )


def _one_of(value: str, choices: tuple[str, ...], option: str) -> str:
    if value not in choices:
        message = f"{value!r} is not one of: {', '.join(choices)}"
        raise typer.BadParameter(message, param_hint=option)
    return value


def choose_config(preset: str | None, config: Path | None) -> MixtureConfig:
    """--config, else --preset, else $MOA_CONFIG, else the ``local`` preset."""
    if config is not None:
        return load_config(config)
    return load_config(preset or os.environ.get("MOA_CONFIG") or DEFAULT_PRESET)


@contextmanager
def reporting_errors() -> Iterator[None]:
    """Turn library errors into one clear line on stderr and a non-zero exit."""
    try:
        yield
    except ConfigError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from exc
    except MoAError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from exc
    except KeyboardInterrupt as exc:
        err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from exc


@contextmanager
def stopping_on_sigterm() -> Iterator[None]:
    """Inside the block, SIGTERM (``kill``, ``timeout``, a job scheduler) stops the command the
    way Ctrl-C does, so a long run keeps its finished work and writes what it writes when
    interrupted (a report, a call log). Outside the main thread nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = False

    def interrupt(signum: int, frame: object) -> None:
        nonlocal stopping
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler) and handler is not signal.default_int_handler:
            # asyncio.run's own (Python 3.11 and later, when SIGINT was not ignored): it
            # cancels the main task and raises KeyboardInterrupt once that has unwound.
            handler(signal.SIGINT, frame)  # type: ignore[arg-type]
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise KeyboardInterrupt from None
        if stopping:
            raise KeyboardInterrupt  # a second SIGTERM: stop at once
        # No one cancels for us: SIGINT is ignored (a job a shell started in the background)
        # or this Python's asyncio.run installs no handler. A KeyboardInterrupt raised here
        # would end one task mid-step and leave the others pending, each printing its own
        # traceback at shutdown; cancelling every task unwinds them all in order instead.
        stopping = True
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.call_soon_threadsafe(lambda: None)  # wake a loop waiting in select()

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    except asyncio.CancelledError:
        if stopping:
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if stopping:  # the run caught its cancellation and returned: it was still interrupted
        raise KeyboardInterrupt


def read_prompt(prompt: str) -> str:
    """The prompt argument, or standard input when it is ``-``."""
    if prompt == "-":
        text = sys.stdin.read()
        if not text.strip():
            raise ConfigError("the prompt read from standard input is empty")
        return text
    return prompt


def call(function: Callable[[], T]) -> T:
    with reporting_errors():
        return function()


def progress_bar(console: Console) -> Progress:
    """A bar with count, elapsed time and ETA; shown on a terminal only (callers log otherwise)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )


# Options of the commands that can run on Ray (``moa batch``, ``moa eval``).
RayActors = Annotated[int, typer.Option(min=1, help="--engine ray: actors in the pool.")]
RayAddress = Annotated[
    str | None,
    typer.Option(help="--engine ray: a cluster to join (e.g. auto); default: Ray starts here."),
]
RayActorCpus = Annotated[
    float, typer.Option(min=0.0, help="--engine ray: CPUs reserved per actor.")
]


def engine_choice(engine: str) -> Literal["local", "ray"]:
    """The ``--engine`` value of ``moa batch`` and ``moa eval``, or a ConfigError naming it."""
    if engine == "local":
        return "local"
    if engine == "ray":
        return "ray"
    raise ConfigError(f"--engine must be local or ray, not {engine!r}")


def command_line(ctx: typer.Context, *command: str) -> str:
    """The command as the user gave it (options in a fixed order), to reproduce the run."""
    words = list(command)
    for param in ctx.command.params:
        name = param.name or ""
        source = ctx.get_parameter_source(name)
        if source is None or source.name != "COMMANDLINE":
            continue
        value = ctx.params[name]
        if param.param_type_name == "argument":
            words.append(str(value))
            continue
        flag = max(param.opts, key=len)
        if isinstance(value, bool):
            words.append(flag if value else (param.secondary_opts or [flag])[0])
        elif isinstance(value, (list, tuple)):
            for item in value:
                words += [flag, str(item)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def unwrap_help(app: typer.Typer) -> None:
    """Make each paragraph of every command's docstring one line, in ``app`` and its groups.

    Typer's rich help keeps a docstring's line breaks, so a paragraph wrapped for the source
    broke mid-sentence in a terminal narrower than the source lines; as one line, rich wraps
    it to the terminal's width. A paragraph laid out by hand (a list, or one that starts
    with Typer's ``\\b``) keeps its lines.
    """
    for info in app.registered_commands:
        text = info.help or inspect.getdoc(info.callback) or ""
        info.help = "\n\n".join(_one_line(part) for part in text.split("\n\n")) or None
    for group in app.registered_groups:
        if group.typer_instance is not None:
            unwrap_help(group.typer_instance)


def _one_line(paragraph: str) -> str:
    lines = paragraph.strip("\n").splitlines()
    if any(line.lstrip().startswith(("-", "*", "\b")) for line in lines):
        return paragraph
    return " ".join(paragraph.split())
