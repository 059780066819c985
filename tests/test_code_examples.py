"""Reading a code request's worked examples, and running a reply's code on them."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moa.code_examples import Example, check_reply, code_examples, describe

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux")

DOCTEST_REQUEST = '''Complete the following Python function.

```python
from typing import List


def evens(numbers: List[int]) -> List[int]:
    """Keep the even numbers, in order.
    >>> evens([1, 2, 3, 4])
    [2, 4]
    >>> xs = [6, 7]
    >>> evens(xs)
    [6]
    >>> print('not checked')
    >>> evens([])
    []
    """
```'''

WRITTEN_REQUEST = '''
def is_small(n):
    """True when n is below 10.
    Examples:
    is_small(3) ➞ true
    * is_small(12) => False
    is_small(9) should return True.
    is_small(n) == True            # not a literal argument: skipped
    other(3) == 1                  # not this function: skipped
    is_small(4) -> 4 < 10          # not a literal value: skipped
    """
'''

GOOD = "```python\ndef evens(numbers):\n    return [n for n in numbers if n % 2 == 0]\n```"
WRONG = "```python\ndef evens(numbers):\n    return [n for n in numbers if n % 2]\n```"


def test_doctest_examples_keep_their_setup_and_skip_unchecked_lines() -> None:
    found = code_examples(DOCTEST_REQUEST)
    assert found is not None
    assert found.entry_point == "evens"
    assert "from typing import List" in found.code
    assert found.examples == (
        Example((), "evens([1, 2, 3, 4])", "[2, 4]"),
        Example(("xs = [6, 7]",), "evens(xs)", "[6]"),
        Example(("xs = [6, 7]", "print('not checked')"), "evens([])", "[]"),
    )


def test_examples_written_out_in_prose_are_read_when_they_are_literals() -> None:
    found = code_examples(WRITTEN_REQUEST)
    assert found is not None
    assert [(e.expression, e.expected) for e in found.examples] == [
        ("is_small(3)", "True"),
        ("is_small(12)", "False"),
        ("is_small(9)", "True"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Write a function that reverses a string.",
        "```python\ndef f(x):\n    return x\n```",  # no docstring
        '```python\ndef f(x):\n    """Doubles x."""\n```',  # no examples
        "```python\ndef f(x:\n    >>> f(1)\n```",  # does not parse
        "What is 2 + 2?",
        DOCTEST_REQUEST + "\n" + "# padding\n" * 12_000,  # too long to be searched
    ],
)
def test_requests_without_usable_examples_have_none(text: str) -> None:
    assert code_examples(text) is None


@linux_only
async def test_a_reply_is_scored_on_the_examples_in_the_sandbox() -> None:
    found = code_examples(DOCTEST_REQUEST)
    assert found is not None
    good = await check_reply(found, GOOD)
    assert (good.passed, good.total, good.all_passed) == (3, 3, True)
    wrong = await check_reply(found, WRONG)
    assert (wrong.passed, wrong.all_passed) == (1, False)  # evens([]) == [] still holds
    assert describe(wrong) == "1/3"


@linux_only
async def test_broken_slow_and_lying_code_scores_nothing() -> None:
    found = code_examples(DOCTEST_REQUEST)
    assert found is not None
    broken = await check_reply(found, "```python\ndef evens(numbers):\n    return numbers[\n```")
    assert broken.passed == 0
    # One example that never ends does not cost the others, nor hang the check.
    slow = (
        "```python\ndef evens(numbers):\n    while not numbers:\n        pass\n"
        "    return [n for n in numbers if n % 2 == 0]\n```"
    )
    assert (await check_reply(found, slow, timeout=5.0)).passed == 2
    # Code that prints a result line of its own cannot pass for the checker's.
    liar = (
        "```python\nimport sys\ndef evens(numbers):\n"
        "    print('moa-examples-0000000000000000 3 3')\n    sys.exit(0)\n```"
    )
    assert (await check_reply(found, liar)).passed == 0


@linux_only
async def test_values_compare_as_python_values_not_as_text() -> None:
    request = '''```python
def half(x):
    """
    >>> half(3)
    1.5
    >>> half(4)
    2.0
    >>> half(2) > 0
    True
    """
```'''
    found = code_examples(request)
    assert found is not None
    close = "```python\ndef half(x):\n    return x * 0.5000000001\n```"
    assert (await check_reply(found, close)).all_passed
    floor = "```python\ndef half(x):\n    return x // 2\n```"
    assert (await check_reply(found, floor)).passed == 2  # 1 != 1.5; 2 == 2.0; True
    request = request.replace("half(2) > 0", "half(2) == 1")
    found = code_examples(request)
    assert found is not None
    assert (await check_reply(found, "```python\ndef half(x):\n    return x / 2\n```")).all_passed
    # A bool is not an int here: 1 does not pass for True.
    request = '''```python
def even(x):
    """
    >>> even(2)
    True
    """
```'''
    found = code_examples(request)
    assert found is not None
    assert (await check_reply(found, "```python\ndef even(x):\n    return 1\n```")).passed == 0


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=40),
            st.sampled_from(
                [
                    "```python\n",
                    "```\n",
                    "def f(x):\n",
                    '    """',
                    "    >>> f(1)\n",
                    "    1\n",
                    "    f(2) == 2\n",
                    "    f([1, (2,)]) ➞ true\n",
                    "    >>> ",
                    "((((",
                    "[" * 300,
                    "\\",
                    "\t",
                ]
            ),
        ),
        max_size=12,
    ).map("".join)
)
def test_any_text_gives_examples_or_none_and_never_raises(text: str) -> None:
    found = code_examples(text)
    if found is not None:
        assert found.examples and found.entry_point
        for example in found.examples:
            compile(example.expression, "<example>", "eval")
