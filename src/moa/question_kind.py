"""What kind of answer a request asks for: a number, a lettered choice, checkable code, or prose.

A vote compares final answers, so it only pays where a request has one short
answer that two replies can state alike; code can be checked instead, when the
request shows what it should return. :func:`question_kind` reads the last user
message and says which: ``"choice"`` when it lists lettered options,
``"number"`` when it asks for a quantity or a calculation, ``"code"`` when it
asks for code and holds a Python function with worked examples
(:mod:`moa.code_examples`), ``None`` for everything else (explanations,
writing, code without examples), where replies can be neither counted nor checked.

The rules are deliberately narrow: a request wrongly taken for a number costs
the samples of a vote, one wrongly taken for prose only loses the vote's gain.
Code requests are never counted, whatever numbers they hold.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from moa.code_examples import code_examples
from moa.types import Message

__all__ = ["QuestionKind", "last_user_text", "question_kind"]

QuestionKind = Literal["number", "choice", "code"]

_CODE_RE = re.compile(
    r"```|^\s*(?:def|class|import|from\s+\S+\s+import|#include|function|fn|public\s+\w+)\b"
    r"|\b(?:write|implement|complete|fix|debug|refactor|provide|give)\b[^.?!\n]{0,40}"
    r"\b(?:function|program|script|code|class|method|query|regex|algorithm|solution\s+in)\b"
    r"|\b(?:python|java|javascript|typescript|c\+\+|rust|golang|sql|bash)\s+"
    r"(?:solution|code|program|function|script|implementation)\b",
    re.IGNORECASE | re.MULTILINE,
)
# "A. text", "(B) text", "C) text", "D: text" at the start of a line.
_OPTION_RE = re.compile(r"^\s*\(?([A-J])(?:[.):]|\)\s*)\s+\S", re.MULTILINE)
_EXPLICIT_NUMBER_RE = re.compile(
    r"\\boxed|####|\b(?:final|the)\s+answer\s+is\s+(?:N|<?number>?)\b|\banswer\s+is\s+N\b"
)
_QUANTITY_RE = re.compile(
    r"\bhow\s+(?:many|much|long|far|old|fast|often|tall|heavy|big|large)\b"
    r"|\bwhat\s+(?:is|was|are|were|will\s+be|would\s+be)\s+(?:the\s+)?"
    r"(?:total|sum|number|amount|cost|price|value|product|quotient|remainder"
    r"|difference(?!\s+between)|average|mean|median|percentage|percent|ratio|area|perimeter"
    r"|volume|speed|distance"
    r"|probability|result|answer)\b"
    r"|\b(?:calculate|compute|evaluate|solve\s+for|find\s+the\s+(?:value|number|sum|total))\b"
    r"|\d\s*[+*/×÷^]\s*\d|\d\s+-\s+\d",
    re.IGNORECASE,
)
_OPEN_ENDED_START_RE = re.compile(
    r"^\s*(?:please\s+)?(?:write|compose|draft|explain|describe|discuss|summari[sz]e|list"
    r"|create|generate|translate|rewrite|paraphrase|suggest|brainstorm|give\s+me|tell\s+me\s+about"
    r"|outline|compare|argue|design|plan|act|pretend|imagine|categori[sz]e|classify|schedule"
    r"|prove|provide)\b",
    re.IGNORECASE,
)


def last_user_text(messages: Sequence[Message]) -> str:
    """The text of the last user message ('' when there is none)."""
    for message in reversed(messages):
        if message.role == "user":
            return message.content
    return ""


def question_kind(text: str) -> QuestionKind | None:
    """The kind of answer ``text`` asks for (``None``: replies cannot be counted or checked)."""
    if not text.strip():
        return None
    if _CODE_RE.search(text):
        return "code" if code_examples(text) is not None else None
    if _has_options(text):
        return "choice"
    if _EXPLICIT_NUMBER_RE.search(text):
        return "number"
    if _OPEN_ENDED_START_RE.search(text):
        return None
    return "number" if _QUANTITY_RE.search(text) else None


def _has_options(text: str) -> bool:
    """At least two lettered options, in order from A."""
    letters = [match.group(1) for match in _OPTION_RE.finditer(text)]
    expected = "A"
    count = 0
    for letter in letters:
        if letter == expected:
            count += 1
            expected = chr(ord(expected) + 1)
    return count >= 2
