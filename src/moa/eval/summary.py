"""Per-system numbers of a run, computed from its ``run.json`` and ``items.jsonl``.

Scores: an exact-answer item is 1 or 0, and so is a code item (its tests passed
or not; reported in percent); a pairwise item
is the preference over the reference (1 win, 0.5 split, 0 loss; percent); a
graded item is the judge's mean rating of its turns (1–10). An item on which
the system failed counts as the worst score; an item the judge left unrated is
left out and counted as ``unjudged``, and so is every item of a judged task run
without a judge (``unjudged`` in ``run.json``): such a run has costs, no scores.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moa.errors import ConfigError
from moa.eval.judge_status import JudgeStatus
from moa.eval.records import ItemLog
from moa.eval.scorers import score_exact_record
from moa.eval.stats import (
    Estimate,
    length_controlled_win_rate,
    mcnemar_exact,
    mean_ci,
    paired_difference,
    percentile,
    win_rate,
)

__all__ = [
    "AgentSummary",
    "PairedComparison",
    "RunSummary",
    "SystemSummary",
    "load_run",
    "summarize",
]

_WORST = {"exact": 0.0, "code": 0.0, "pairwise": 0.0, "graded": 1.0}
_BINARY = ("exact", "code")
"""Kinds whose items score 1 or 0: McNemar tests and an oracle bound apply."""


@dataclass(frozen=True)
class AgentSummary:
    """One agent of a system (a position in its layers, and the model there) over its calls."""

    layer: int
    role: str
    index: int
    model: str
    calls: int
    right: float | None
    """Percent of its calls whose own reply held the right answer (exact-answer and code tasks)."""
    at_limit: float
    """Percent of its calls that stopped at ``max_tokens`` (``finish_reason: length``)."""
    completion_tokens: float
    """Mean completion tokens per call."""


@dataclass
class SystemSummary:
    """What one system achieved and what it cost."""

    name: str
    origin: str
    single: bool
    description: dict[str, Any]
    n: int = 0
    errors: int = 0
    unjudged: int = 0
    score: Estimate | None = None
    vote: Estimate | None = None
    oracle: Estimate | None = None
    versus_best: Estimate | None = None
    win_rate: tuple[float, float] | None = None
    lc_win_rate: tuple[float, float] | None = None
    categories: dict[str, float] = field(default_factory=dict)
    calls: float = math.nan
    prompt_tokens: float = math.nan
    completion_tokens: float = math.nan
    cost: float | None = None
    latency_p50: float = math.nan
    latency_p95: float = math.nan
    ttft_p50: float = math.nan
    output_chars: float = math.nan
    """Mean length of the final answer in characters (judged tasks)."""
    replayed: int = 0
    agents: list[AgentSummary] = field(default_factory=list)

    @property
    def tokens(self) -> float:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in self.__dict__.items():
            out[name] = value.to_dict() if isinstance(value, Estimate) else value
        out["agents"] = [dict(a.__dict__) for a in self.agents]
        return out


@dataclass(frozen=True)
class PairedComparison:
    """Two systems on the items both finished: ``first`` minus ``second``."""

    first: str
    second: str
    difference: Estimate
    only_first: int | None = None
    """Exact-answer tasks: items only ``first`` got right (``only_second`` likewise)."""
    only_second: int | None = None
    p_value: float | None = None
    """Exact McNemar test of the discordant items (exact-answer tasks)."""

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "difference": self.difference.to_dict()}


@dataclass
class RunSummary:
    info: dict[str, Any]
    systems: list[SystemSummary]
    scale: str
    """How scores read: ``percent`` or ``rating``."""
    best_single: str | None = None
    common_items: int = 0
    any_oracle: Estimate | None = None
    finished: dict[str, Estimate | None] = field(default_factory=dict)
    """Each system over all of its own finished items, when that differs from the table."""
    pairs: list[PairedComparison] = field(default_factory=list)
    """Every two systems, in table order of the first, on the items both finished."""
    judge: JudgeStatus | None = None
    """A judged run: whether its judge was validated (set by the report)."""

    @property
    def kind(self) -> str:
        return str(self.info.get("task_kind", "exact"))

    def ranked(self) -> list[SystemSummary]:
        """The systems, highest score first (unscored ones last)."""
        return sorted(self.systems, key=lambda s: -(s.score.mean if s.score else -math.inf))

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.info.get("task"),
            "scale": self.scale,
            "best_single": self.best_single,
            "common_items": self.common_items,
            "any_oracle": None if self.any_oracle is None else self.any_oracle.to_dict(),
            "finished": {k: v.to_dict() if v else None for k, v in self.finished.items()},
            "systems": [s.to_dict() for s in self.systems],
            "pairs": [p.to_dict() for p in self.pairs],
            **({} if self.judge is None else {"judge_validation": self.judge.to_dict()}),
        }


def load_run(out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``run.json`` and the latest record of each (system, item) of an output directory."""
    info_path = out / "run.json"
    if not info_path.is_file():
        raise ConfigError(f"{str(out)!r} holds no evaluation run (no run.json); run moa eval first")
    info = json.loads(info_path.read_text("utf-8"))
    return info, list(ItemLog(out / "items.jsonl").latest().values())


def _rescored(record: dict[str, Any]) -> dict[str, Any]:
    """The record scored by today's extractors (logs keep outputs, so old runs benefit)."""
    if record.get("error") or record.get("gold") is None:
        return record
    copy: dict[str, Any] = json.loads(json.dumps(record))
    score_exact_record(copy)
    return copy


def _item_score(record: dict[str, Any], kind: str, scored: bool = True) -> float | None:
    if not scored:
        return None
    if record.get("error"):
        return _WORST[kind]
    score = record.get("score")
    return None if score is None else float(score)


def summarize(info: dict[str, Any], records: Sequence[dict[str, Any]]) -> RunSummary:
    """Every system's numbers, and every system against the best single model.

    With systems at different points of an unfinished run, the numbers are over
    the items *every* system finished, so they compare like with like;
    ``RunSummary.finished`` keeps each system's score over all of its own items.
    """
    kind = str(info.get("task_kind", "exact"))
    scored = not info.get("unjudged")
    scale = "rating" if kind == "graded" else "percent"
    factor = 1.0 if scale == "rating" else 100.0
    wanted = set(info.get("item_ids", []))
    if kind == "exact":
        records = [_rescored(r) for r in records]
    by_key: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for record in records:
        if not wanted or str(record.get("item_id")) in wanted:
            by_key[str(record.get("key"))][str(record.get("item_id"))] = record
    systems = info.get("systems", [])
    item_sets = [set(by_key.get(s["key"], {})) for s in systems]
    common = set.intersection(*item_sets) if item_sets else set()
    finished: dict[str, Estimate | None] = {}
    if common and any(items != common for items in item_sets):
        for system in systems:
            everything = SystemSummary(system["name"], system["origin"], system["single"], system)
            _fill(everything, list(by_key.get(system["key"], {}).values()), kind, factor, scored)
            finished[system["name"]] = everything.score
        by_key = defaultdict(
            dict, {k: {i: r for i, r in v.items() if i in common} for k, v in by_key.items()}
        )
    summaries: list[SystemSummary] = []
    scores_by_system: dict[str, dict[str, float]] = {}
    for system in systems:
        items = by_key.get(system["key"], {})
        summary = SystemSummary(system["name"], system["origin"], system["single"], system)
        scores_by_system[system["name"]] = _fill(
            summary, list(items.values()), kind, factor, scored
        )
        summaries.append(summary)
    run = RunSummary(info, summaries, scale, finished=finished)
    _compare(run, scores_by_system, factor, kind, by_key, info)
    return run


def _fill(
    summary: SystemSummary,
    records: list[dict[str, Any]],
    kind: str,
    factor: float,
    scored: bool = True,
) -> dict[str, float]:
    summary.n = len(records)
    summary.errors = sum(1 for r in records if r.get("error"))
    scores: dict[str, float] = {}
    for record in records:
        value = _item_score(record, kind, scored)
        if value is None:
            summary.unjudged += 1
        else:
            scores[str(record["item_id"])] = value
    if scores:
        summary.score = mean_ci(list(scores.values())).scaled(factor)
    votes = [r["vote"]["correct"] for r in records if isinstance(r.get("vote"), dict)]
    if votes:
        summary.vote = mean_ci([float(v) for v in votes]).scaled(factor)
    oracles = [r["oracle"] for r in records if r.get("oracle") is not None]
    if oracles:
        summary.oracle = mean_ci([float(v) for v in oracles]).scaled(factor)
    if kind == "pairwise":
        _pairwise(summary, records)
    if kind in ("graded", "pairwise"):
        per_category: dict[str, list[float]] = defaultdict(list)
        for record in records:
            value = _item_score(record, kind, scored)
            if value is not None:
                per_category[str(record.get("category") or record.get("dataset") or "")].append(
                    value
                )
        summary.categories = {
            k: sum(v) / len(v) * factor for k, v in sorted(per_category.items()) if k
        }
    _costs(summary, [r for r in records if not r.get("error")])
    summary.agents = _agents([r for r in records if not r.get("error")])
    return scores


def _agents(records: list[dict[str, Any]]) -> list[AgentSummary]:
    """Each agent's calls over the items: its own accuracy, and how often it ran out of tokens."""
    calls: dict[tuple[int, str, int, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        for call in record.get("calls", []):
            if not call.get("error"):
                key = (int(call["layer"]), str(call["role"]), int(call["index"]), call["model"])
                calls[key].append(call)
    agents = []
    for (layer, role, index, model), group in sorted(
        calls.items(), key=lambda kv: (kv[0][0], kv[0][1] != "proposer", kv[0][2], kv[0][3])
    ):
        judged = [bool(c["correct"]) for c in group if c.get("correct") is not None]
        tokens = [c["usage"]["completion_tokens"] for c in group if c.get("usage")]
        agents.append(
            AgentSummary(
                layer,
                role,
                index,
                model,
                len(group),
                100.0 * sum(judged) / len(judged) if judged else None,
                100.0 * sum(c.get("finish_reason") == "length" for c in group) / len(group),
                sum(tokens) / len(tokens) if tokens else math.nan,
            )
        )
    return agents


def _pairwise(summary: SystemSummary, records: list[dict[str, Any]]) -> None:
    judged = [r for r in records if not r.get("error") and r.get("score") is not None]
    if not judged:
        return
    prefs = [float(r["score"]) for r in judged]
    summary.win_rate = win_rate(prefs)
    lc = length_controlled_win_rate(
        prefs,
        [r.get("output_chars", 0) for r in judged],
        [r.get("reference_chars", 0) for r in judged],
    )
    summary.lc_win_rate = (lc.win_rate, lc.se)


def _costs(summary: SystemSummary, records: list[dict[str, Any]]) -> None:
    if not records:
        return
    n = len(records)
    summary.calls = sum(r["usage"]["calls"] for r in records) / n
    summary.prompt_tokens = sum(r["usage"]["prompt_tokens"] for r in records) / n
    summary.completion_tokens = sum(r["usage"]["completion_tokens"] for r in records) / n
    costs = [r["cost"] for r in records if r.get("cost") is not None]
    summary.cost = sum(costs) / len(costs) if costs else None
    latencies = [float(r["latency_s"]) for r in records if r.get("latency_s") is not None]
    summary.latency_p50 = percentile(latencies, 50)
    summary.latency_p95 = percentile(latencies, 95)
    ttfts = [float(r["ttft_s"]) for r in records if r.get("ttft_s") is not None]
    summary.ttft_p50 = percentile(ttfts, 50)
    summary.replayed = sum(1 for r in records if r.get("latency_source") == "replayed")
    chars = [float(r["output_chars"]) for r in records if r.get("output_chars") is not None]
    if chars:
        summary.output_chars = sum(chars) / len(chars)


def _compare(
    run: RunSummary,
    scores: dict[str, dict[str, float]],
    factor: float,
    kind: str,
    by_key: dict[str, dict[str, dict[str, Any]]],
    info: dict[str, Any],
) -> None:
    """Best single model, every system against it on shared items, and the cross-system oracle."""
    finished = [set(s) for s in scores.values()]
    if info.get("unjudged"):  # no scores: an item is finished once it is answered
        finished = [set(by_key.get(s["key"], {})) for s in info.get("systems", [])]
    common = set.intersection(*finished) if finished else set()
    run.common_items = len(common)
    singles = [s for s in run.systems if s.single and s.score is not None]
    if singles:
        best = max(singles, key=lambda s: s.score.mean if s.score else -math.inf)
        run.best_single = best.name
        base = scores[best.name]
        for system in run.systems:
            shared = sorted(set(scores[system.name]) & set(base))
            if system.name != best.name and shared:
                diff = paired_difference(
                    [scores[system.name][i] for i in shared], [base[i] for i in shared]
                )
                system.versus_best = diff.scaled(factor)
    ranked = run.ranked()
    for index, first in enumerate(ranked):
        for second in ranked[index + 1 :]:
            pair = _paired(first.name, second.name, scores, factor, kind)
            if pair is not None:
                run.pairs.append(pair)
    if kind in _BINARY and common:
        hits = []
        for item in sorted(common):
            hits.append(
                float(
                    any(
                        by_key[s["key"]][item].get("oracle") or by_key[s["key"]][item].get("score")
                        for s in info.get("systems", [])
                        if item in by_key.get(s["key"], {})
                    )
                )
            )
        run.any_oracle = mean_ci(hits).scaled(factor)


def _paired(
    first: str, second: str, scores: dict[str, dict[str, float]], factor: float, kind: str
) -> PairedComparison | None:
    shared = sorted(set(scores[first]) & set(scores[second]))
    if not shared:
        return None
    a = [scores[first][i] for i in shared]
    b = [scores[second][i] for i in shared]
    difference = paired_difference(a, b).scaled(factor)
    if kind not in _BINARY:
        return PairedComparison(first, second, difference)
    only_first = sum(x > y for x, y in zip(a, b, strict=True))
    only_second = sum(y > x for x, y in zip(a, b, strict=True))
    return PairedComparison(
        first, second, difference, only_first, only_second, mcnemar_exact(only_first, only_second)
    )
