"""Show a run in the terminal: the final answer streamed, intermediate answers on request."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from typing import TextIO

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from moa.engine.events import AgentDone, AgentFailed, Done, Event, LayerStarted, TextDelta
from moa.engine.result import AgentResult, LayerResult, Result

__all__ = ["EventPrinter", "result_json", "run_events", "summary_line"]


def summary_line(result: Result) -> str:
    usage = result.usage
    cost = "" if result.cost is None else f", ${result.cost:.6f}"
    ttft = "" if result.ttft_s is None else f", first token {result.ttft_s:.2f}s"
    return (
        f"{usage.calls} calls, {usage.prompt_tokens} prompt + {usage.completion_tokens} "
        f"completion tokens{cost}; {result.latency_s:.2f}s{ttft}"
    )


def result_json(result: Result) -> str:
    return json.dumps(result.to_dict(), indent=2, ensure_ascii=False)


def run_events(
    layers: Sequence[LayerResult],
    extra_calls: Sequence[AgentResult] = (),
    aggregator: AgentResult | None = None,
    result: Result | None = None,
) -> Iterator[Event]:
    """The events a live run would have shown for these calls (to show a stored run again).

    With ``result`` the run ends as it ended, with its answer and :class:`Done`.
    """
    for layer in layers:
        yield LayerStarted(layer.index, "proposer", tuple(a.agent for a in layer.agents))
        for agent in layer.agents:
            yield AgentDone(agent) if agent.ok else AgentFailed(agent)
    for call in extra_calls:
        yield AgentDone(call) if call.ok else AgentFailed(call)
    if aggregator is not None:
        yield LayerStarted(aggregator.layer, "aggregator", (aggregator.agent,))
        yield AgentDone(aggregator) if aggregator.ok else AgentFailed(aggregator)
    if result is not None:
        if result.output:
            yield TextDelta(result.output)
        yield Done(result)


class EventPrinter:
    """Writes the final answer to ``out`` as it streams; layers and stats go to ``console``."""

    def __init__(self, *, show_layers: bool, out: TextIO | None = None) -> None:
        self.show_layers = show_layers
        self.out = out or sys.stdout
        self.console = Console(stderr=True, highlight=False)
        self._answer_started = False

    def handle(self, event: Event) -> Result | None:
        if isinstance(event, TextDelta):
            if not self._answer_started and self.show_layers:
                self.console.rule("answer")
            self._answer_started = True
            self.out.write(event.text)
            self.out.flush()
        elif isinstance(event, LayerStarted) and self.show_layers:
            label = "aggregator" if event.role == "aggregator" else f"layer {event.layer}"
            more = " more" if event.first_index else ""  # a later wave of the same layer
            self.console.rule(f"{label}: {len(event.agents)}{more} agent(s)")
        elif isinstance(event, AgentDone | AgentFailed) and self.show_layers:
            if event.result.role == "proposer" or not event.result.ok:
                self.console.print(self._panel(event.result))
        elif isinstance(event, Done):
            if self._answer_started:
                self.out.write("\n")
            elif event.result.output:
                self.out.write(event.result.output + "\n")
            self.out.flush()
            self._answer_started = False  # the next run (a chat turn) starts afresh
            if self.show_layers:
                self.console.print(Text(summary_line(event.result), style="dim"))
            return event.result
        return None

    @staticmethod
    def _panel(result: AgentResult) -> Panel:
        stats = (
            f"{result.latency_s:.2f}s · {result.usage.completion_tokens} tok"
            f" · {result.attempts} attempt(s)"
        )
        title = result.agent if result.model in result.agent else f"{result.agent} [{result.model}]"
        if result.ok:
            body = Text(result.output or "")
            if result.partial:
                title += " (partial)"
            return Panel(body, title=Text(title), subtitle=stats, border_style="cyan")
        return Panel(
            Text(result.error or "failed", style="red"),
            title=Text(title + " FAILED"),
            subtitle=stats,
            border_style="red",
        )
