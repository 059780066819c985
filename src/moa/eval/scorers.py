"""Scoring of exact-answer tasks: one reply, a majority vote, or the best of several."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from moa.answers import extract_choice, extract_number, numbers_equal

__all__ = ["ExactScore", "majority_vote", "score_choice", "score_exact_record", "score_number"]


@dataclass(frozen=True)
class ExactScore:
    """Whether a reply is right, and the answer read out of it (``None``: none found)."""

    correct: bool
    extracted: str | None


def score_number(output: str, gold: str) -> ExactScore:
    """A numeric reply against a normalized gold number (GSM8K)."""
    extracted = extract_number(output)
    return ExactScore(numbers_equal(extracted, gold), extracted)


def score_choice(output: str, choices: Sequence[str], gold: str) -> ExactScore:
    """A multiple-choice reply against the gold choice index (as a string)."""
    index = extract_choice(output, choices)
    extracted = None if index is None else str(index)
    return ExactScore(extracted == gold, extracted)


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """The most frequent answer; a tie goes to the one that appears first (``None`` ignored).

    Putting the greedy answer first therefore makes it the tie-breaker.
    """
    present = [a for a in answers if a is not None]
    if not present:
        return None
    counts = Counter(present)
    best = max(counts.values())
    return next(a for a in present if counts[a] == best)


def score_exact_record(record: dict[str, Any]) -> None:
    """Score a logged exact-answer item in place from its outputs and its ``gold`` answer.

    Sets ``score`` and ``extracted``, each call's ``extracted``/``correct``, and for
    mixtures the first layer's majority ``vote`` and the ``oracle`` (some call was
    right). Working from the log alone lets a report re-score old runs whenever
    the extractors improve.
    """
    gold = str(record["gold"])
    choices = list(record.get("choices") or [])

    def score(text: str) -> ExactScore:
        return score_choice(text, choices, gold) if choices else score_number(text, gold)

    final = score(record.get("output") or "")
    record["score"], record["extracted"] = float(final.correct), final.extracted
    correct_any = final.correct
    for call in record.get("calls", []):
        if call.get("output") is None:
            continue
        # A program's answer is what it printed when run, not a number in its code.
        computed = call.get("computed")
        result = score(call["output"] if computed is None else f"The answer is {computed}")
        call["extracted"], call["correct"] = result.extracted, result.correct
        correct_any = correct_any or result.correct
    first = [c for c in record.get("calls", []) if c["layer"] == 1 and c["role"] == "proposer"]
    if first:
        vote = majority_vote([c.get("extracted") for c in first])
        same = (vote == gold) if choices else numbers_equal(vote, gold)
        record["vote"] = {"answer": vote, "correct": vote is not None and same}
        record["oracle"] = correct_any
