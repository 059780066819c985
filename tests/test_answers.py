from __future__ import annotations

import json
from pathlib import Path

import pytest

from moa.answers import extract_answer, extract_number


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She pays 3 * $4 = $12.\n#### 12", "12"),
        ("The answer is $1,250.", "1250"),
        ("So x = \\boxed{42} and we check 42 - 1 = 41.", "42"),
        ("First 5 + 5 = 10, then 10 * 2 = 20", "20"),
        ("Final answer: 3.50 dollars", "3.5"),
        ("Answer: -7", "-7"),
        ("no numbers here", None),
        ("", None),
        ("The answer is 18.\n```python\nprint(18 + 1)\n```\nOutput: 19", "18"),
    ],
)
def test_numbers(text: str, expected: str | None) -> None:
    assert extract_answer(text, "number") == expected


def test_choices_lines_and_patterns() -> None:
    assert extract_answer("I think (C) because... The answer is B.", "choice") == "B"
    assert extract_answer("reasoning\n  Paris. ", "last_line") == "paris"
    assert extract_answer("Yes  Indeed.", "text") == "yes indeed"
    assert extract_answer("val=3; val=9", pattern=r"val=(\d)") == "9"
    assert extract_answer("nothing", pattern=r"val=(\d)") is None


def test_a_bare_letter_counts_when_no_option_texts_are_known() -> None:
    assert extract_answer("it is C", "choice") == "C"
    assert extract_answer("A. one\nB. two\nSo B", "choice") == "B"
    assert extract_answer("no letters here", "choice") is None


def test_votes_read_numbers_the_way_the_scorer_does() -> None:
    fixture = Path(__file__).parent / "fixtures" / "eval" / "number_replies.jsonl"
    cases = [json.loads(line) for line in fixture.read_text("utf-8").splitlines() if line.strip()]
    assert cases
    for case in cases:
        assert extract_answer(case["text"]) == extract_number(case["text"]) == case["expected"]
