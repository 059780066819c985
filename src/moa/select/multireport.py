"""What ``moa select`` over several tasks reports: the per-task table and the rule."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from moa.select.floors import RULE, Standing
from moa.select.multitask import MultiSelection
from moa.select.report import (
    delta_text,
    failed_count,
    failure_warning,
    summary,
    table,
    task_sections,
)

__all__ = ["multi_failed", "multi_markdown", "multi_summary"]

POINTS = (
    "Δ is in points: percentage points for tasks scored 0-1 (accuracy, pass rate, win rate), "
    "tenths of a grade for tasks graded 1-10."
)


def _points(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def _yes(value: bool) -> str:
    return "yes" if value else "**no**"


def per_task_table(standing: Standing) -> list[str]:
    rows = [
        [
            d.task,
            str(d.delta.n),
            d.best_single,
            _points(d.single_score),
            _points(d.score),
            delta_text(d.delta),
            f"{d.floor:g}",
            _yes(d.floor_met),
            "yes" if d.significant else "no",
        ]
        for d in standing.deltas
    ]
    header = ["task", "held-out items", "best single (dev)", "its score", "score"]
    header += ["Δ [95% CI]", "floor", "floor met", "significant"]
    return table(header, rows)


def multi_failed(selection: MultiSelection) -> int:
    """Items that failed, over every task, split and configuration."""
    return sum(failed_count(task) for task in selection.tasks)


def multi_markdown(
    selection: MultiSelection, *, command: str = "", data: Mapping[str, str] | None = None
) -> str:
    """The human-readable report of a selection over several tasks."""
    options, data = selection.options, data or {}
    names = [t.task for t in selection.tasks]
    out = [f"# Agent selection on {', '.join(names)}", ""]
    if command:
        out += ["```", command, "```", ""]
    out += [
        f"- {t.task}: data {data.get(t.task, '(given)')}; dev split {len(t.dev_ids)} items, "
        f"held-out split {len(t.heldout_ids)} items"
        for t in selection.tasks
    ]
    out += [
        f"- splits: disjoint, each task's shuffled with seed {options.seed}",
        f"- pool: {', '.join(options.pool)}",
        f"- answers: greedy (temperature 0, seed 0) and samples at temperature "
        f"{options.sampling.temperature} (seeds 1..{options.sampling.samples - 1}), "
        f"max_tokens {options.sampling.max_tokens}",
        f"- budget per request, on every task: {options.budget.describe()}",
        "- floors (points): " + ", ".join(f"{t} {f:g}" for t, f in selection.floors.items()),
        "",
        "## Recommendation",
        "",
        f"**{selection.recommended.name if selection.recommended else 'none'}** — "
        f"{selection.verdict}.",
        "",
        f"The rule: {RULE}. {POINTS}",
        "",
    ]
    failed = multi_failed(selection)
    if failed:
        out += [f"**Warning:** {failure_warning(failed)}", ""]
    shown = [selection.standing(selection.recommended)]
    if selection.chosen != selection.recommended:
        shown.append(selection.standing(selection.chosen))
    for standing in shown:
        if standing is None:
            continue
        role = "recommended" if standing.candidate == selection.recommended else "best on dev"
        out += [f"## Per task: {standing.candidate.name} ({role})", ""]
        out += [*per_task_table(standing), ""]
    out += [
        "## Configurations that could be recommended, in the rule's order",
        "",
        "The single model best on average over the dev splits and every mixture within the "
        "budget that answered the held-out splits; mean Δ over the tasks, calls per request "
        "averaged over the tasks' held-out items.",
        "",
    ]
    rows = [
        [
            s.candidate.name,
            _yes(s.qualifies),
            str(s.wins),
            _points(s.mean_delta),
            f"{s.calls:.1f}",
            ", ".join(s.below_floor()),
        ]
        for s in selection.standings
    ]
    header = ["configuration", "meets every floor", "significant gains", "mean Δ", "calls"]
    out += table([*header, "below the floor on"], rows)
    if selection.skipped:
        out += ["", f"## Not run on any task ({len(selection.skipped)})", ""]
        out += [f"- {name}: {why}" for name, why in selection.skipped[:40]]
        if len(selection.skipped) > 40:
            out.append(f"- ... and {len(selection.skipped) - 40} more")
    for task in selection.tasks:
        out += ["", f"## Task {task.task}", "", *task_sections(task, level=3)]
    return "\n".join(out) + "\n"


def multi_summary(
    selection: MultiSelection, *, data: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The numbers of a selection over several tasks as plain data (``select.json``)."""

    def name(candidate: object) -> str | None:
        return getattr(candidate, "name", None)

    tasks = []
    for task in selection.tasks:
        own = summary(task)
        for shared in ("pool", "verdict", "recommended", "chosen_on_dev", "self_moa"):
            own.pop(shared)
        data_path = (data or {}).get(task.task)
        tasks.append({**own, "data": data_path, "floor": selection.floors[task.task]})
    recommended = selection.standing(selection.recommended)
    return {
        "tasks": tasks,
        "pool": list(selection.options.pool),
        "floors": selection.floors,
        "rule": RULE,
        "recommended": name(selection.recommended),
        "chosen_on_dev": name(selection.chosen),
        "best_single_on_average_dev": name(selection.best_single),
        "self_moa": name(selection.self_moa),
        "verdict": selection.verdict,
        "failed_items": multi_failed(selection),
        "per_task": [d.to_dict() for d in recommended.deltas] if recommended else [],
        "standings": [s.to_dict() for s in selection.standings],
        "skipped": [{"name": n, "why": w} for n, w in selection.skipped],
    }
