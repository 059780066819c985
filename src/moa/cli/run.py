"""``moa run`` (the default command) and ``moa chat``."""

from __future__ import annotations

from typing import Annotated

import typer

from moa.cli.common import ConfigOption, PresetOption, choose_config, read_prompt, reporting_errors
from moa.cli.render import EventPrinter, result_json
from moa.config import build_mixture
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
) -> None:
    """Answer PROMPT with a mixture, streaming the final answer."""
    with reporting_errors():
        mixture = build_mixture(choose_config(preset, config))
        messages = _conversation(system, [Message("user", read_prompt(prompt))])
        params = GenerationParams(max_tokens=max_tokens)
        if as_json:
            typer.echo(result_json(mixture.run(messages, params=params)))
            return
        printer = EventPrinter(show_layers=show_layers)
        for event in mixture.stream(messages, params=params):
            printer.handle(event)


def chat(
    preset: PresetOption = None,
    config: ConfigOption = None,
    system: SystemOption = None,
    show_layers: ShowLayersOption = False,
    max_tokens: MaxTokensOption = None,
) -> None:
    """Talk with a mixture over several turns (/reset clears the history, /exit or Ctrl-D quits)."""
    with reporting_errors():
        mixture = build_mixture(choose_config(preset, config))
        mixture.check()
        history: list[Message] = []
        printer = EventPrinter(show_layers=show_layers)
        printer.console.print(f"[dim]mixture {mixture.name}; /reset, /exit[/]")
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
            for event in mixture.stream(
                _conversation(system, history), params=GenerationParams(max_tokens=max_tokens)
            ):
                result = printer.handle(event) or result
            if result is not None:
                history.append(Message("assistant", result.output))


def _conversation(system: str | None, messages: list[Message]) -> list[Message]:
    return ([Message("system", system)] if system else []) + messages
