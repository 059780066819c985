from __future__ import annotations

import pytest

from moa.question_kind import question_kind


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("A farmer has 17 sheep. All but 9 run away. How many sheep are left?", "number"),
        ("What is 17 * 23?", "number"),
        ("Solve for x in the equation 3x + 10 = 5(x - 2).", "number"),
        ("What is the total cost of 3 pens at $2 each?", "number"),
        ("Work it out, then end with: The answer is N", "number"),
        ("Which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus", "choice"),
        ("Pick one:\n(A) red\n(B) blue", "choice"),
        ("What is the capital of France?", None),
        ("What is the difference between TCP and UDP?", None),
        ("Explain how many people live in cities and why.", None),
        ("Write a Python function that returns the sum of 2 + 3.", None),
        ("def add(a, b):\n    '''Return a + b.'''\n", None),
        ("Fix this code:\n```\nx = 1 + 2\n```", None),
        ('def add(a, b):\n    """Return a + b.\n    >>> add(2, 3)\n    5\n    """\n', "code"),
        ('Complete:\n```python\ndef neg(x):\n    """neg(2) == -2"""\n```', "code"),
        ("What does this print? >>> add(2, 3)", None),
        ("Tell me a joke.", None),
        ("The meeting runs 9-11 am; is that long?", None),
        ("", None),
        ("Options:\nB. one\nC. two", None),
    ],
)
def test_question_kind(text: str, kind: str | None) -> None:
    assert question_kind(text) == kind
