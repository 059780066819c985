"""The task kinds: how to load a set, what to ask, and how a reply is scored.

``exact`` tasks (GSM8K, MMLU) compare an extracted answer with the gold one, so
they also get a majority vote over a mixture's proposers and an oracle bound;
``code`` tasks (HumanEval) run the item's tests on the reply's code in a
sandbox (pass@1, and an oracle bound); ``pairwise`` (AlpacaEval) and ``graded``
(MT-Bench) tasks need a judge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from moa.answers import numbers_equal
from moa.errors import ConfigError
from moa.eval.datasets import (
    EvalItem,
    humaneval_package_data,
    load_alpaca_eval,
    load_gsm8k,
    load_humaneval,
    load_mmlu,
    load_mt_bench,
)
from moa.eval.prompts import PromptSet, fill
from moa.eval.scorers import ExactScore, score_choice, score_number

__all__ = ["TASKS", "Task", "get_task"]

TaskKind = Literal["exact", "code", "pairwise", "graded"]
_LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Task:
    """One benchmark format."""

    name: str
    kind: TaskKind
    loader: Callable[[str | Path, str | Path | None], list[EvalItem]]
    template: str | None = None
    """The prompt template wrapped around the item (``None``: the item's text as is)."""
    description: str = ""
    default_data: Callable[[], str] | None = None
    """Where the data is when the user gives no ``--data`` (``None``: it must be given)."""

    @property
    def binary(self) -> bool:
        """Whether every item scores 1 or 0 (accuracy, McNemar, oracle)."""
        return self.kind in ("exact", "code")

    def load(self, source: str | Path, reference: str | Path | None = None) -> list[EvalItem]:
        return self.loader(source, reference)

    def user_message(self, item: EvalItem, turn: int, prompts: PromptSet) -> str:
        """What the user says at ``turn`` (0-based)."""
        text = item.turns[turn]
        if self.template is None:
            return text
        if self.kind == "code":
            # Code goes in verbatim: fill() would break '[[' in a docstring for the judges' sake.
            return prompts.get(self.template).replace("{question}", text)
        values = {"question": text}
        if item.choices:
            values["choices"] = "\n".join(
                f"{_LETTERS[i]}. {choice}" for i, choice in enumerate(item.choices)
            )
            values["letters"] = ", ".join(_LETTERS[: len(item.choices)])
            subject = (item.category or "").replace("_", " ")
            values["subject"] = f" about {subject}" if subject else ""
        return fill(prompts.get(self.template), values)

    def templates(self) -> list[str]:
        """Names of the templates this task uses (they are part of a run's identity)."""
        return [self.template] if self.template else []

    def matches(self, item: EvalItem, extracted: str | None) -> bool:
        """Whether an already extracted answer (e.g. a majority vote) is the gold one."""
        if item.choices:
            return extracted is not None and extracted == item.answer
        return numbers_equal(extracted, item.answer)

    def score(self, item: EvalItem, output: str) -> ExactScore:
        """Score one reply of an exact-answer task."""
        if item.answer is None:
            raise ConfigError(f"task {self.name!r} has no gold answers to score against")
        if item.choices:
            return score_choice(output, item.choices, item.answer)
        return score_number(output, item.answer)


def _no_reference(loader: Callable[[str | Path], list[EvalItem]]) -> Callable[..., list[EvalItem]]:
    def load(source: str | Path, reference: str | Path | None = None) -> list[EvalItem]:
        return loader(source)

    return load


TASKS: dict[str, Task] = {
    "gsm8k": Task(
        "gsm8k", "exact", _no_reference(load_gsm8k), "task_gsm8k", "grade-school math, exact number"
    ),
    "mmlu": Task(
        "mmlu", "exact", _no_reference(load_mmlu), "task_mmlu", "four-choice questions (MMLU-Redux)"
    ),
    "humaneval": Task(
        "humaneval",
        "code",
        _no_reference(load_humaneval),
        "task_humaneval",
        "Python functions, pass@1 by running their tests",
        humaneval_package_data,
    ),
    "alpaca_eval": Task(
        "alpaca_eval", "pairwise", load_alpaca_eval, None, "judged pairwise against a reference"
    ),
    "mt_bench": Task("mt_bench", "graded", load_mt_bench, None, "two turns, judged 1-10"),
}
_ALIASES = {
    "human_eval": "humaneval",
    "human-eval": "humaneval",
    "mmlu_redux": "mmlu",
    "mmlu-redux": "mmlu",
    "alpaca": "alpaca_eval",
    "alpaca-eval": "alpaca_eval",
    "mt-bench": "mt_bench",
    "mtbench": "mt_bench",
}


def get_task(name: str) -> Task:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in TASKS:
        raise ConfigError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}")
    return TASKS[key]
