"""The rule that picks one configuration for several tasks: a floor on every task, then gains.

On each task a configuration is compared with that task's best single model
(the best on the task's dev split) by the paired difference of their held-out
scores, with a bootstrap 95% interval, in points (percentage points for tasks
scored 0-1, tenths of a grade for 1-10 grades). A configuration *qualifies*
when, on every task, the interval's lower bound is at least ``-floor``: it is
not clearly worse than the best single model anywhere. Qualifying
configurations rank by the number of tasks where the lower bound is above 0 (a
significant gain), then by the mean difference over the tasks, then by calls
per request.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from moa.eval.stats import Estimate
from moa.eval.tasks import Task
from moa.select.candidates import Candidate
from moa.select.evaluate import Evaluation

__all__ = ["DEFAULT_FLOOR", "RULE", "Standing", "TaskDelta", "points", "rank", "task_delta"]

DEFAULT_FLOOR = 2.0
"""Points a configuration may be below a task's best single model (interval's lower bound)."""

RULE = (
    "a configuration qualifies when, on every task, the 95% bootstrap interval of its paired "
    "held-out difference to that task's best single model (chosen on the task's dev split) has "
    "a lower bound of at least -floor points; qualifying configurations rank by the number of "
    "tasks where that lower bound is above 0 (a significant gain), then by the mean difference "
    "over the tasks, then by calls per request; when none qualifies, the single model best on "
    "average over the dev splits is recommended"
)

_SLACK = 1e-9


def points(task: Task) -> float:
    """The factor that turns a task's scores into points (about 0-100 for every task)."""
    return 10.0 if task.kind == "graded" else 100.0


@dataclass(frozen=True)
class TaskDelta:
    """A configuration against one task's best single model, on its held-out split."""

    task: str
    best_single: str
    single_score: float
    """The best single model's mean held-out score, in points."""
    score: float
    """The configuration's mean held-out score, in points."""
    delta: Estimate
    """The paired difference (configuration - best single), in points."""
    floor: float

    @property
    def floor_met(self) -> bool:
        return self.delta.low >= -self.floor - _SLACK

    @property
    def significant(self) -> bool:
        return self.delta.low > _SLACK

    def to_dict(self) -> dict[str, object]:
        return {
            "task": self.task,
            "heldout_items": self.delta.n,
            "best_single": self.best_single,
            "best_single_score": self.single_score,
            "score": self.score,
            "delta": self.delta.to_dict(),
            "floor": self.floor,
            "floor_met": self.floor_met,
            "significant": self.significant,
        }


def task_delta(
    task: Task, candidate: Evaluation, single: Evaluation, best_single: str, floor: float
) -> TaskDelta:
    scale = points(task)
    return TaskDelta(
        task.name,
        best_single,
        single.mean * scale,
        candidate.mean * scale,
        candidate.paired_difference(single).scaled(scale),
        floor,
    )


@dataclass(frozen=True)
class Standing:
    """A configuration across the tasks: its per-task differences and its cost."""

    candidate: Candidate
    deltas: tuple[TaskDelta, ...]
    calls: float
    """Mean model calls per request over the tasks' held-out items."""

    @property
    def qualifies(self) -> bool:
        return all(d.floor_met for d in self.deltas)

    @property
    def wins(self) -> int:
        return sum(d.significant for d in self.deltas)

    @property
    def mean_delta(self) -> float:
        values = [d.delta.mean for d in self.deltas]
        return sum(values) / len(values) if values else math.nan

    def below_floor(self) -> list[str]:
        return [d.task for d in self.deltas if not d.floor_met]

    def key(self) -> tuple[int, float, float]:
        mean = self.mean_delta
        return (-self.wins, -mean if not math.isnan(mean) else math.inf, self.calls)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.candidate.name,
            "qualifies": self.qualifies,
            "significant_gains": self.wins,
            "mean_delta": self.mean_delta,
            "calls": self.calls,
            "tasks": [d.to_dict() for d in self.deltas],
        }


def rank(standings: Sequence[Standing]) -> list[Standing]:
    """Qualifying configurations first, in the rule's order; the others after, in the same order."""
    return sorted(standings, key=lambda s: (not s.qualifies, *s.key()))
