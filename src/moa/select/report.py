"""What ``moa select`` writes: the recommended config (YAML) and a report (Markdown and JSON)."""

from __future__ import annotations

import math
from typing import Any

import yaml

from moa.config import Endpoints
from moa.eval.stats import Estimate
from moa.eval.tasks import get_task
from moa.select.candidates import Candidate, Sampling
from moa.select.evaluate import Evaluation
from moa.select.search import Selection

__all__ = [
    "config_data",
    "config_yaml",
    "cost_cells",
    "delta_text",
    "failed_count",
    "failed_items",
    "failure_warning",
    "markdown",
    "score_text",
    "summary",
    "table",
    "task_sections",
]


def config_data(
    candidate: Candidate, sampling: Sampling, base: Endpoints | None = None
) -> dict[str, Any]:
    """A config for ``moa run/serve``: the candidate's spec plus the base config's providers."""
    data = candidate.spec(sampling).model_dump(mode="json", exclude_defaults=True)
    if base is not None:
        # Keys stay out of files: a provider's key is read from its environment variable.
        providers = {
            name: settings.model_dump(mode="json", exclude_defaults=True, exclude={"api_key"})
            for name, settings in base.providers.items()
        }
        if providers:
            data["providers"] = providers
        if "local" in base.model_fields_set:
            data["local"] = base.local.model_dump(mode="json", exclude_defaults=True)
    return data


def config_yaml(
    candidate: Candidate, sampling: Sampling, base: Endpoints | None = None, note: str = ""
) -> str:
    header = "".join(f"# {line}\n" for line in note.splitlines() if line.strip())
    body = yaml.safe_dump(config_data(candidate, sampling, base), sort_keys=False)
    return header + body


def score_text(estimate: Estimate, percent: bool) -> str:
    if math.isnan(estimate.mean):
        return "n/a"
    if percent:
        return (
            f"{estimate.mean * 100:.1f} ± {estimate.half_width * 100:.1f} "
            f"[{estimate.low * 100:.1f}, {estimate.high * 100:.1f}]"
        )
    return f"{estimate.mean:.2f} [{estimate.low:.2f}, {estimate.high:.2f}]"


def _paired(a: Evaluation, b: Evaluation, percent: bool) -> Estimate:
    diff = a.paired_difference(b)
    return diff.scaled(100) if percent else diff


def delta_text(estimate: Estimate) -> str:
    if math.isnan(estimate.mean):
        return "n/a"
    return f"{estimate.mean:+.1f} [{estimate.low:+.1f}, {estimate.high:+.1f}]"


def cost_cells(cost: dict[str, float]) -> list[str]:
    if not cost:
        return ["", "", ""]
    return [f"{cost['calls']:.1f}", f"{cost['tokens']:.0f}", f"{cost['latency_s']:.1f}"]


def _roles(selection: Selection, candidate: Candidate) -> str:
    tags = []
    if candidate == selection.recommended:
        tags.append("**recommended**")
    if candidate == selection.chosen:
        tags.append("best on dev")
    if candidate == selection.best_single:
        tags.append("best single on dev")
    if candidate == selection.heldout_best_single:
        tags.append("best single on held-out")
    if candidate == selection.self_moa:
        tags.append("Self-MoA of the best")
    if not tags and candidate.kind != "single":
        tags.append("runner-up on dev")
    return ", ".join(tags)


def failed_items(selection: Selection) -> list[tuple[str, str, Evaluation]]:
    """``(configuration, split, evaluation)`` of every evaluation in which items failed."""
    found = [(t.candidate.name, "dev", t.dev) for t in selection.tried if t.dev.failures()]
    found += [(n, "held-out", e) for n, e in selection.heldout.items() if e.failures()]
    return found


def failed_count(selection: Selection) -> int:
    """Items that failed, over every split and configuration."""
    return sum(len(e.failures()) for _, _, e in failed_items(selection))


def failure_warning(count: int) -> str:
    """What a report and the command say when ``count`` items failed."""
    return (
        f"{count} item{'s' if count != 1 else ''} failed and "
        f"{'were' if count != 1 else 'was'} scored as wrong (see 'Failed items'): a score "
        "that counts failures measures them, not the answers. Fix the cause (a call that "
        "timed out on a slow CPU: --timeout) and run the same command again; the cache "
        "keeps every call that succeeded."
    )


def _failure_section(selection: Selection, h: str) -> list[str]:
    found = failed_items(selection)
    if not found:
        return []
    out = [f"{h} Failed items", ""]
    for name, split, evaluation in found:
        failures = evaluation.failures()
        out.append(
            f"- {name}, {split}: {len(failures)} of {len(evaluation.outcomes)} items failed; "
            f"the first ({failures[0].item_id}): {failures[0].error}"
        )
    return [*out, ""]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown(selection: Selection, *, command: str = "", data: str = "") -> str:
    """The human-readable report."""
    options = selection.options
    out = [f"# Agent selection on {selection.task}", ""]
    if command:
        out += ["```", command, "```", ""]
    out += [
        f"- data: {data or '(given)'}; dev split {len(selection.dev_ids)} items, held-out split "
        f"{len(selection.heldout_ids)} items (disjoint, shuffled with seed {options.seed})",
        f"- pool: {', '.join(options.pool)}",
        f"- answers: greedy (temperature 0, seed 0) and samples at temperature "
        f"{options.sampling.temperature} (seeds 1..{options.sampling.samples - 1}), "
        f"max_tokens {options.sampling.max_tokens}",
        f"- budget per request: {options.budget.describe()}",
        "",
        "## Recommendation",
        "",
        f"**{selection.recommended.name if selection.recommended else 'none'}** — "
        f"{selection.verdict}.",
        "",
    ]
    failed = failed_count(selection)
    if failed:
        out += [f"**Warning:** {failure_warning(failed)}", ""]
    return "\n".join(out + task_sections(selection)) + "\n"


def task_sections(selection: Selection, level: int = 2) -> list[str]:
    """The held-out results, the configurations tried on dev, diversity, what was not run."""
    h = "#" * level
    task = get_task(selection.task)
    percent = task.binary  # right or wrong per item: in percent, Δ in percentage points
    unit = ("pass rate %" if task.kind == "code" else "accuracy %") if percent else "score"
    tried = selection.tried_by_name()
    out = _failure_section(selection, h)
    out += [
        f"{h} Held-out results ({len(selection.heldout_ids)} items)",
        "",
        f"Scores are {unit} with a 95% interval; Δ is the paired difference to the best single "
        "model (chosen on dev), with a bootstrap 95% interval. Cost is per request, measured: "
        "model calls, tokens (prompt + completion), and the critical path in seconds (the "
        "slowest call of each stage, each call timed by its own duration: for one from the "
        "cache, the original call's; for one that waited for its provider's concurrency "
        "limit, from its free slot).",
        "",
    ]
    reference = selection.heldout.get(selection.best_single.name) if selection.best_single else None
    rows = []
    ranked = sorted(selection.heldout.items(), key=lambda kv: -kv[1].mean)
    for name, evaluation in ranked:
        candidate = tried[name].candidate if name in tried else None
        delta = delta_text(_paired(evaluation, reference, percent)) if reference else ""
        rows.append(
            [
                name,
                score_text(evaluation.estimate(), percent),
                delta if reference is not None and evaluation is not reference else "—",
                *cost_cells(evaluation.per_request()),
                _roles(selection, candidate) if candidate else "",
            ]
        )
    out += table(
        ["configuration", unit, "Δ vs best single", "calls", "tokens", "seconds", ""], rows
    )
    out += [
        "",
        f"{h} Configurations tried on dev ({len(selection.dev_ids)} items)",
        "",
        "The estimate orders untried configurations before any aggregator call is made: the "
        "better of the aggregator alone and a vote over the proposers' cached answers, plus "
        "part of the gap to the oracle (any proposer right). Estimated cost comes from the "
        "single-model measurements.",
        "",
    ]
    rows = []
    for item in sorted(selection.tried, key=lambda t: -t.dev.mean):
        rows.append(
            [
                item.candidate.name,
                score_text(item.dev.estimate(), percent),
                "" if item.proxy is None else f"{item.proxy * (100 if percent else 1):.1f}",
                *cost_cells(item.measured),
                *cost_cells(item.estimated),
                "yes" if item.within_budget else "**no**",
            ]
        )
    out += table(
        [
            "configuration",
            unit,
            "estimate",
            "calls",
            "tokens",
            "seconds",
            "est. calls",
            "est. tokens",
            "est. seconds",
            "in budget",
        ],
        rows,
    )
    if selection.diversity:
        out += ["", f"{h} Pairwise diversity of the single models (dev)", ""]
        rows = []
        for pair in selection.diversity:
            rows.append(
                [
                    f"{pair.a} / {pair.b}",
                    f"{pair.lexical:.2f}",
                    "" if pair.answer is None else f"{pair.answer:.2f}",
                    "" if pair.complement_ab is None else f"{pair.complement_ab:.2f}",
                    "" if pair.complement_ba is None else f"{pair.complement_ba:.2f}",
                    "" if pair.semantic is None else f"{pair.semantic:.2f}",
                ]
            )
        out += table(
            [
                "pair A / B",
                "lexical distance",
                "answers differ",
                "B right when A wrong",
                "A right when B wrong",
                "semantic distance",
            ],
            rows,
        )
    if selection.skipped:
        out += ["", f"{h} Not run ({len(selection.skipped)})", ""]
        out += [f"- {name}: {why}" for name, why in selection.skipped[:40]]
        if len(selection.skipped) > 40:
            out.append(f"- ... and {len(selection.skipped) - 40} more")
    return out


def _evaluation_data(evaluation: Evaluation) -> dict[str, Any]:
    return {
        "mean": evaluation.mean,
        "estimate": evaluation.estimate().to_dict(),
        "per_request": evaluation.per_request(),
        "failed": len(evaluation.failures()),
        "items": [
            {"id": o.item_id, "score": o.score, "answer": o.answer, "error": o.error}
            for o in evaluation.outcomes
        ],
    }


def summary(selection: Selection) -> dict[str, Any]:
    """The numbers of a selection as plain data (``select.json``)."""

    def name(candidate: Candidate | None) -> str | None:
        return candidate.name if candidate else None

    return {
        "task": selection.task,
        "pool": list(selection.options.pool),
        "dev_ids": selection.dev_ids,
        "heldout_ids": selection.heldout_ids,
        "recommended": name(selection.recommended),
        "chosen_on_dev": name(selection.chosen),
        "best_single_dev": name(selection.best_single),
        "best_single_heldout": name(selection.heldout_best_single),
        "self_moa": name(selection.self_moa),
        "verdict": selection.verdict,
        "failed_items": failed_count(selection),
        "dev": {
            t.candidate.name: {
                **_evaluation_data(t.dev),
                "proxy": t.proxy,
                "estimated": t.estimated,
                "within_budget": t.within_budget,
            }
            for t in selection.tried
        },
        "heldout": {n: _evaluation_data(e) for n, e in selection.heldout.items()},
        "diversity": [d.to_dict() for d in selection.diversity],
        "skipped": [{"name": n, "why": w} for n, w in selection.skipped],
    }
