"""Answer extraction on replies the way small models really write them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from moa.answers import extract_choice, extract_number, normalize_number, numbers_equal
from moa.eval.scorers import majority_vote, score_choice, score_number

FIXTURES = Path(__file__).parent.parent / "fixtures" / "eval"


def _cases(name: str) -> list[Any]:
    lines = (FIXTURES / name).read_text("utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return [pytest.param(r, id=r["case"]) for r in records]


@pytest.mark.parametrize("case", _cases("number_replies.jsonl"))
def test_extract_number(case: dict[str, Any]) -> None:
    assert extract_number(case["text"]) == case["expected"]


@pytest.mark.parametrize("case", _cases("choice_replies.jsonl"))
def test_extract_choice(case: dict[str, Any]) -> None:
    assert extract_choice(case["text"], case["choices"]) == case["expected"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("$1,234.50", "1234.5"), ("18.00", "18"), ("-0.50", "-0.5"), ("7.", "7"), ("abc", None)],
)
def test_normalize_number(text: str, expected: str | None) -> None:
    assert normalize_number(text) == expected


def test_numbers_equal_compares_values() -> None:
    assert numbers_equal("18", "18.0")
    assert not numbers_equal("18", "19")
    assert not numbers_equal(None, "1")


def test_scores_carry_the_extracted_answer() -> None:
    assert score_number("The answer is $1,000.", "1000").correct
    wrong = score_number("The answer is 999", "1000")
    assert (wrong.correct, wrong.extracted) == (False, "999")
    assert score_choice("Answer: B", ["x", "y", "z", "w"], "1").correct
    assert not score_choice("no idea", ["x", "y"], "0").correct


def test_majority_vote_breaks_ties_by_first_answer() -> None:
    assert majority_vote(["3", "5", "5", None]) == "5"
    assert majority_vote(["3", "5"]) == "3"
    assert majority_vote([None, None]) is None
