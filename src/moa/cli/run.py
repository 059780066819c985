"""``moa run`` (the default command) and ``moa chat``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from moa.cli.common import ConfigOption, PresetOption, choose_config, read_prompt, reporting_errors
from moa.cli.recording import LogContentOption, NoLogOption, recorded_stream, run_log
from moa.cli.render import EventPrinter, result_json
from moa.config import MixtureConfig, build_mixture
from moa.engine.events import Done
from moa.engine.mixture import Mixture
from moa.history import RunLog
from moa.types import GenerationParams, Message

__all__ = ["chat", "run"]

SystemOption = Annotated[
    str | None, typer.Option("--system", "-s", help="Your system prompt (kept for every agent).")
]
ShowLayersOption = Annotated[
    bool, typer.Option("--show-layers", help="Print every intermediate answer, by layer.")
]
MaxTokensOption = Annotated[
    int | None, typer.Option("--max-tokens", min=1, help="Limit the final answer's length.")
]


def run(
    prompt: Annotated[str, typer.Argument(help="The question; '-' reads it from standard input.")],
    preset: PresetOption = None,
    config: ConfigOption = None,
    system: SystemOption = None,
    show_layers: ShowLayersOption = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole result (every call) as JSON.")
    ] = False,
    max_tokens: MaxTokensOption = None,
    no_log: NoLogOption = False,
    log_content: LogContentOption = "full",
) -> None:
    """Answer PROMPT with a mixture, streaming the final answer."""
    with reporting_errors():
        chosen = choose_config(preset, config)
        mixture = build_mixture(chosen)
        messages = _conversation(system, [Message("user", read_prompt(prompt))])
        params = GenerationParams(max_tokens=max_tokens)
        printer = EventPrinter(show_layers=show_layers)
        with run_log(chosen, no_log=no_log, content=log_content) as log:
            for event in recorded_stream(
                mixture, messages, log, source="cli", config=chosen, params=params
            ):
                if not as_json:
                    printer.handle(event)
                elif isinstance(event, Done):
                    typer.echo(result_json(event.result))


def chat(
    preset: PresetOption = None,
    config: ConfigOption = None,
    system: SystemOption = None,
    show_layers: ShowLayersOption = False,
    max_tokens: MaxTokensOption = None,
    no_log: NoLogOption = False,
    log_content: LogContentOption = "full",
) -> None:
    """Talk with a mixture over several turns (/reset clears the history, /exit or Ctrl-D quits).

    Every turn is recorded in the run history as its own run, with the conversation so far.
    """
    with reporting_errors():
        chosen = choose_config(preset, config)
        mixture = build_mixture(chosen)
        mixture.check()
        with run_log(chosen, no_log=no_log, content=log_content) as log:
            params = GenerationParams(max_tokens=max_tokens)
            _chat_loop(mixture, chosen, log, system, params, show_layers)


def _chat_loop(
    mixture: Mixture,
    config: MixtureConfig,
    log: RunLog,
    system: str | None,
    params: GenerationParams,
    show_layers: bool,
) -> None:
    history: list[Message] = []
    printer = EventPrinter(show_layers=show_layers)
    printer.console.print(f"[dim]mixture {escape(mixture.name)}; /reset, /exit[/]")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            break
        if line in ("/exit", "/quit"):
            break
        if line == "/reset":
            history.clear()
            continue
        if not line:
            continue
        history.append(Message("user", line))
        result = None
        conversation = _conversation(system, history)
        for event in recorded_stream(
            mixture, conversation, log, source="chat", config=config, params=params
        ):
            result = printer.handle(event) or result
        if result is not None:
            history.append(Message("assistant", result.output))


def _conversation(system: str | None, messages: list[Message]) -> list[Message]:
    return ([Message("system", system)] if system else []) + messages
