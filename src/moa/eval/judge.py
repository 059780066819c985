"""LLM judges: pairwise preference (AlpacaEval style) and 1–10 grading (MT-Bench style).

The judge is any mixture (a single model is a mixture without layers), run
through the same engine as the systems under test. Its instructions are the
``judge_*`` templates in ``moa/prompts``; a :class:`~moa.eval.prompts.PromptSet`
can point to the user's own files.

Pairwise judging asks twice with the two outputs swapped and averages, which
cancels the judge's preference for a position. A judge whose verdicts follow
the position rather than the answers gains nothing from that: the ``graded``
protocol compares the two outputs by grading each alone (1–10, the
``judge_single`` prompt) instead, so no answer is ever shown beside another
and there is no order to prefer. Grading uses the reference answer for the
categories where correctness can be checked against one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from moa.engine.mixture import Mixture
from moa.errors import ConfigError
from moa.eval.datasets import EvalItem
from moa.eval.prompts import PromptSet, fill
from moa.types import Message, Usage

__all__ = [
    "PROTOCOLS",
    "REFERENCE_CATEGORIES",
    "Grade",
    "Judge",
    "PairwiseVerdict",
    "parse_preference",
    "parse_rating",
]

PROTOCOLS = ("pairwise", "graded")
"""How a judge compares an output with a reference: ``pairwise`` asks which of the two is
better, once in each order; ``graded`` grades each alone and the higher grade wins."""

REFERENCE_CATEGORIES = frozenset({"math", "reasoning", "coding"})
"""MT-Bench categories graded against a reference answer."""

_CHOICE_RE = re.compile(r"\[\[\s*([AB])\s*\]\]")
_RATING_RE = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_RATING_FALLBACK_RE = re.compile(r"rating\s*[:=]?\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_preference(text: str) -> str | None:
    """``"A"`` or ``"B"`` from a judge's reply (its last ``[[A]]``/``[[B]]``), else ``None``."""
    found = _CHOICE_RE.findall(text)
    if found:
        return str(found[-1])
    last = text.strip().splitlines()[-1].strip(" *.:").upper() if text.strip() else ""
    return last if last in ("A", "B") else None


def parse_rating(text: str) -> float | None:
    """The 1–10 rating of a judge's reply (its last ``[[N]]`` or ``Rating: N``), else ``None``."""
    found = _RATING_RE.findall(text) or _RATING_FALLBACK_RE.findall(text)
    if not found:
        return None
    value = float(found[-1])
    return value if 1.0 <= value <= 10.0 else None


@dataclass(frozen=True)
class PairwiseVerdict:
    """The judge's view of one output against the reference, in both orders."""

    preference: float | None
    """1: the output wins in both orders, 0: the reference does, 0.5: split; None: unparsed."""
    verdicts: tuple[str | None, ...]
    """Per order, who won: ``output``, ``reference`` or ``None`` (the reply had no verdict).
    Graded: the same winner twice (no order), ``None`` for equal or unparsed grades."""
    replies: tuple[str, ...]
    usage: Usage
    grades: tuple[float | None, float | None] | None = None
    """Graded: the output's grade and the reference's (``None``: pairwise)."""

    def to_dict(self) -> dict[str, Any]:
        out = {
            "preference": self.preference,
            "verdicts": list(self.verdicts),
            "replies": list(self.replies),
            "usage": self.usage.to_dict(),
        }
        return out if self.grades is None else {**out, "grades": list(self.grades)}


@dataclass(frozen=True)
class Grade:
    """1–10 ratings of each turn of one conversation."""

    ratings: tuple[float | None, ...]
    replies: tuple[str, ...]
    usage: Usage
    with_reference: bool = False

    @property
    def score(self) -> float | None:
        """The mean rating over the turns that were rated."""
        rated = [r for r in self.ratings if r is not None]
        return sum(rated) / len(rated) if rated else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "ratings": list(self.ratings),
            "with_reference": self.with_reference,
            "replies": list(self.replies),
            "usage": self.usage.to_dict(),
        }


@dataclass
class Judge:
    """Asks ``mixture`` to compare or grade answers."""

    mixture: Mixture
    prompts: PromptSet = field(default_factory=PromptSet)
    protocol: str = "pairwise"
    """How :meth:`pairwise` compares (see :data:`PROTOCOLS`)."""

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(
                f"judge protocol {self.protocol!r} is not one of: {', '.join(PROTOCOLS)}"
            )

    @property
    def name(self) -> str:
        return self.mixture.name

    async def _ask(self, prompt: str) -> tuple[str, Usage]:
        result = await self.mixture.arun([Message("user", prompt)])
        return result.output, result.usage

    async def pairwise(self, instruction: str, output: str, reference: str) -> PairwiseVerdict:
        """Compare ``output`` with ``reference``: in both orders, or by their grades."""
        if self.protocol == "graded":
            return await self._by_grades(instruction, output, reference)
        template = self.prompts.get("judge_pairwise")
        orders = (
            ("output", output, "reference", reference),
            ("reference", reference, "output", output),
        )
        verdicts: list[str | None] = []
        replies: list[str] = []
        usage = Usage()
        for name_a, text_a, name_b, text_b in orders:
            prompt = fill(
                template, {"instruction": instruction, "output_a": text_a, "output_b": text_b}
            )
            reply, spent = await self._ask(prompt)
            usage = usage + spent
            replies.append(reply)
            choice = parse_preference(reply)
            verdicts.append(None if choice is None else (name_a if choice == "A" else name_b))
        decided = [v for v in verdicts if v is not None]
        preference = sum(1.0 for v in decided if v == "output") / len(decided) if decided else None
        return PairwiseVerdict(preference, tuple(verdicts), tuple(replies), usage)

    async def _by_grades(self, instruction: str, output: str, reference: str) -> PairwiseVerdict:
        """Grade each alone; the higher grade wins, equal grades split (a preference of 0.5).

        The reference's grade is the same call for every output compared with it,
        so the call cache makes it once per instruction.
        """
        template = self.prompts.get("judge_single")
        grades: list[float | None] = []
        replies: list[str] = []
        usage = Usage()
        for text in (output, reference):
            prompt = fill(template, {"question": instruction, "answer": text})
            reply, spent = await self._ask(prompt)
            usage = usage + spent
            replies.append(reply)
            grades.append(parse_rating(reply))
        mine, theirs = grades
        winner: str | None = None
        if mine is None or theirs is None:
            preference = None
        else:
            preference = 1.0 if mine > theirs else 0.0 if mine < theirs else 0.5
            winner = {1.0: "output", 0.0: "reference"}.get(preference)
        return PairwiseVerdict(preference, (winner, winner), tuple(replies), usage, (mine, theirs))

    async def grade(self, item: EvalItem, answers: list[str]) -> Grade:
        """Rate each turn of ``answers`` to ``item`` (1–10), with references where they count."""
        use_reference = bool(item.references) and (item.category or "") in REFERENCE_CATEGORIES
        ratings: list[float | None] = []
        replies: list[str] = []
        usage = Usage()
        for turn in range(min(len(item.turns), len(answers))):
            prompt = self._grading_prompt(item, answers, turn, use_reference)
            reply, spent = await self._ask(prompt)
            usage = usage + spent
            replies.append(reply)
            ratings.append(parse_rating(reply))
        return Grade(tuple(ratings), tuple(replies), usage, use_reference)

    def _grading_prompt(
        self, item: EvalItem, answers: list[str], turn: int, use_reference: bool
    ) -> str:
        suffix = "_reference" if use_reference else ""
        references = list(item.references) + [""] * len(item.turns)
        if turn == 0:
            values = {"question": item.turns[0], "answer": answers[0], "reference": references[0]}
            return fill(self.prompts.get(f"judge_single{suffix}"), values)
        values = {
            "question_1": item.turns[turn - 1],
            "answer_1": answers[turn - 1],
            "question_2": item.turns[turn],
            "answer_2": answers[turn],
            "reference_1": references[turn - 1],
            "reference_2": references[turn],
        }
        return fill(self.prompts.get(f"judge_single_multiturn{suffix}"), values)
