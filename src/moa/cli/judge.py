"""``moa judge validate``: check a judge on known comparisons before trusting its numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from moa.cli.common import (
    CacheOnlyOption,
    JudgeProtocolOption,
    RecordCallsOption,
    command_line,
    progress_bar,
    recorded_calls,
    reporting_errors,
    stopping_on_sigterm,
)
from moa.providers.cache import DEFAULT_CACHE

__all__ = ["judge_app"]

judge_app = typer.Typer(
    help="The LLM judge of moa eval: validate it before its numbers are reported.",
    no_args_is_help=True,
)

DEFAULT_WEAK = "local:smollm2-135m"  # moa.eval.judge_check.DEFAULT_WEAK, without importing it


@judge_app.command("validate")
def validate(
    ctx: typer.Context,
    judge: Annotated[
        str,
        typer.Option(help="The judge, as moa eval --judge takes it: model id, preset or config."),
    ],
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            "-d",
            help="The AlpacaEval folder: instructions.json and reference_outputs/"
            "{gpt4_1106_preview,Together-MoA,Together-MoA-Lite}.json.",
        ),
    ],
    items: Annotated[
        int,
        typer.Option("--items", "--limit", "-n", min=1, help="The first N instructions (a count)."),
    ] = 100,
    judge_protocol: JudgeProtocolOption = "pairwise",
    weak: Annotated[
        str, typer.Option(help="The weak model whose answers must lose (greedy, 512 tokens).")
    ] = DEFAULT_WEAK,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path(
        "runs/judge-validation"
    ),
    concurrency: Annotated[int, typer.Option(min=1, help="Calls in flight at once.")] = 1,
    prompts: Annotated[
        Path | None,
        typer.Option(help="A folder of prompt files replacing the shipped ones (as moa eval)."),
    ] = None,
    cache: Annotated[
        Path, typer.Option(help="The call cache (SQLite) shared with moa eval.")
    ] = DEFAULT_CACHE,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Call every model anew.")] = False,
    cache_only: CacheOnlyOption = False,
    record_calls: RecordCallsOption = None,
    timeout: Annotated[
        float | None, typer.Option(min=1.0, help="Seconds one call may take (slow CPUs).")
    ] = None,
    stop_early: Annotated[
        bool,
        typer.Option(
            "--stop-early",
            help="Stop once the weak answer has won too often, in one order, for the judge to "
            "reach 90% over the N instructions: the verdict is then sealed. The known-order "
            "check is not run and the figures cover the pairs judged until then.",
        ),
    ] = False,
) -> None:
    """Validate a judge on the first N AlpacaEval instructions; writes judge-validation.json.

    Checks, with each pair judged in both orders (or, with --judge-protocol graded, each answer
    graded alone): the judge prefers gpt4_1106_preview's reference to the weak model's
    answer in >= 90% of instructions in each order, and
    ranks Together-MoA > Together-MoA-Lite > 50% against gpt4_1106_preview. Give the file
    to moa eval --judge-validation. Every call goes through the call cache: a rerun is
    free, an interrupted run resumes.
    """
    console = Console(stderr=True, highlight=False)
    with reporting_errors():
        from moa.eval.judge_check import JudgeCheck, JudgeCheckOptions

        options = JudgeCheckOptions(
            judge=judge,
            data=data,
            out=out,
            items=items,
            weak=weak,
            concurrency=concurrency,
            cache=None if no_cache else cache,
            cache_only=cache_only,
            protocol=judge_protocol,
            prompts_dir=prompts,
            timeout=timeout,
            stop_early=stop_early,
            command=command_line(ctx, "moa", "judge", "validate"),
        )
        check = JudgeCheck(options)
        console.print(
            f"validating {escape(judge)} on {items} instructions (weak model {escape(weak)}); "
            f"{items} answers and {3 * items} pairs, "
            + (
                "each compared by grading its two answers alone"
                if judge_protocol == "graded"
                else "each judged in both orders"
            )
        )
        with (
            stopping_on_sigterm(),
            recorded_calls(record_calls, console, no_cache=no_cache),
            _Progress(console) as progress,
        ):
            document = check.run(progress)
    _summary(document, out, console)
    if not document["validated"]:
        raise typer.Exit(1)


class _Progress:
    """A progress bar on a terminal; a line per phase and every 10% otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar = progress_bar(console)
        self.task = self.bar.add_task("", total=None)
        self.phase = ""

    def __enter__(self) -> _Progress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def __call__(self, phase: str, done: int, total: int) -> None:
        self.bar.update(self.task, description=escape(phase), completed=done, total=total)
        if self.console.is_terminal:
            return
        step = max(1, total // 10)
        if phase != self.phase or done == total or done % step == 0:
            self.phase = phase
            self.console.print(f"{escape(phase)}: {done}/{total}")


def _summary(document: dict[str, Any], out: Path, console: Console) -> None:
    criteria = document["criteria"]
    loses, order = criteria["weak_loses"], criteria["known_order"]
    consistency = criteria["position_consistency"]["rate"]

    def pct(estimate: dict[str, Any]) -> str:
        if estimate.get("mean") is None:
            return "–"
        return f"{estimate['mean']:.1f}% [{estimate['low']:.1f}, {estimate['high']:.1f}]"

    mark = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[yellow]not run[/]"}
    stopped = document.get("stopped_early")
    graded = document["judge"].get("protocol") == "graded"
    if stopped:
        console.print(
            f"stopped after {stopped['judged']} instructions: the reference had failed to win "
            f"{stopped['misses']} times" + ("" if graded else " in one order") + ", more than "
            f"the {stopped['allowed']} that {loses['threshold']:.0f}% of {document['items']} "
            "allows"
        )
    preferred = (
        f"graded above the weak answer: {pct(loses['weak_first'])}"
        if graded
        else f"preferred with the weak answer first: {pct(loses['weak_first'])}, "
        f"second: {pct(loses['reference_first'])}"
    )
    console.print(
        f"  weak answer loses: {mark[loses['passed']]} (reference {preferred}; "
        f"needs >= {loses['threshold']:.0f}%" + ("" if graded else " in each order") + ")"
    )
    console.print(
        f"  known order: {mark[order['passed']]}"
        + (
            ""
            if stopped
            else f" (Together-MoA {pct(order['Together-MoA'])}, Together-MoA-Lite "
            f"{pct(order['Together-MoA-Lite'])}; intervals "
            + ("separate" if order["cis_separate"] else "overlap")
            + ")"
        )
    )
    if not graded:  # a graded judge sees one answer at a time: there is no order
        console.print(f"  position consistency: {pct(consistency)}")
    verdict = "[bold green]validated[/]" if document["validated"] else "[bold red]NOT validated[/]"
    console.print(f"judge {escape(document['judge']['spec'])}: {verdict}")
    report, validation = escape(str(out / "report.md")), escape(str(out / "judge-validation.json"))
    console.print(f"report: {report}; use: --judge-validation {validation}")
