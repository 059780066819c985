"""Read the final answer out of a model's free-form reply.

One reading serves everyone who compares answers: the scorers of ``moa eval``,
the ``vote`` strategy and the ``early_exit`` agreement test, so a mixture
counts as agreeing exactly when the scorer would read the same answer.

Small models rarely follow the requested answer format exactly: they bold the
number, add units and dollar signs, write ``1,234``, answer in a Python block
with an invented "output" section, or get cut off at ``max_tokens`` in the
middle of code. The extractors therefore look for the most explicit signal
first and fall back step by step:

numbers: ``\\boxed{}`` > ``####`` > "the (final) answer is" / "Answer:" > an
"output" block or comment > the last number of the last prose line that has one.
A code block left open by truncation is ignored, because the numbers in
unfinished code are inputs, not results.

letters: "answer is (B)" / "Answer: B" > ``\\boxed{B}`` > a line that is only a
letter > a line starting with "B)" or "(B)" > the text of exactly one choice
(without the choices' texts, as in a vote: the last capital letter A-J).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Literal

__all__ = [
    "AnswerKind",
    "extract_answer",
    "extract_choice",
    "extract_number",
    "normalize_number",
    "numbers_equal",
]

AnswerKind = Literal["number", "choice", "last_line", "text"]

# A number as people write it: optional sign and currency, thousands separators, decimals.
_NUMBER = r"-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\$?\s?\.\d+"
_NUMBER_RE = re.compile(rf"(?<![\w.])(?:{_NUMBER})(?![\d])")
_BOXED_RE = re.compile(r"\\boxed\s*\{")
_HASHES_RE = re.compile(rf"####\s*\**\s*({_NUMBER})")
_ANSWER_IS_RE = re.compile(
    r"answer\W{0,4}(?:is|=|:|would\s+be|will\s+be|should\s+be)\s*[:=]?",
    re.IGNORECASE,
)
_OUTPUT_RE = re.compile(
    r"(?:^|\n)\s*(?:#\s*)?(?:```\s*)?(?:output|result|prints?)\b\s*:?\s*\n?\s*(?:```\w*\s*)?"
    rf"({_NUMBER})",
    re.IGNORECASE,
)
_FENCE_RE = re.compile(r"```")
# Between a marker and its number: formatting, a few words ("is approximately", "of").
_MARKER_GAP = 80
_MARKER_WORDS = 6


def normalize_number(text: str) -> str | None:
    """``"$1,234.50"`` → ``"1234.5"``; ``"18.00"`` → ``"18"``; ``None`` when not a number."""
    cleaned = text.replace("$", "").replace(",", "").replace(" ", "").strip()
    cleaned = cleaned.rstrip(".")
    if not cleaned:
        return None
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def numbers_equal(a: str | None, b: str | None) -> bool:
    """Whether two normalized numbers are the same value."""
    if a is None or b is None:
        return False
    try:
        return abs(Decimal(a) - Decimal(b)) <= Decimal("1e-6")
    except InvalidOperation:
        return False


def _strip_open_fence(text: str) -> str:
    """Drop a trailing code block that was never closed (the reply was cut off inside it)."""
    fences = [m.start() for m in _FENCE_RE.finditer(text)]
    if len(fences) % 2 == 1:
        return text[: fences[-1]]
    return text


def _without_code(text: str) -> str:
    """The text with every fenced code block removed."""
    return re.sub(r"```.*?```", "\n", text, flags=re.DOTALL)


def _balanced(text: str, start: int) -> str | None:
    """The content of the brace group opening just before ``start``."""
    depth = 1
    for index in range(start, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start:index]
    return None


def _first_number(text: str) -> str | None:
    match = _NUMBER_RE.search(_unformat(text))
    return normalize_number(match.group(0)) if match else None


def _last_number(text: str) -> str | None:
    matches = _NUMBER_RE.findall(_unformat(text))
    return normalize_number(matches[-1]) if matches else None


def _unformat(text: str) -> str:
    """Remove markdown/LaTeX decoration that hides numbers (``**18**``, ``\\$18``, ``\\text{}``)."""
    text = text.replace("\\$", "$").replace("\\,", ",").replace("\\!", "")
    text = re.sub(r"\\(?:text|mathrm|textbf)\{([^{}]*)\}", r"\1", text)
    return text.replace("**", " ").replace("__", " ")


def _boxed(text: str) -> str | None:
    found: str | None = None
    for match in _BOXED_RE.finditer(text):
        content = _balanced(text, match.end())
        if content is not None:
            number = _fraction(content) or _first_number(
                content.replace("{", " ").replace("}", " ")
            )
            found = number or found
    return found


def _fraction(text: str) -> str | None:
    """``\\frac{3}{4}`` or ``3/4`` as a decimal (only when that is all the text says)."""
    match = re.fullmatch(
        r"\s*(-?)\s*\\[dt]?frac\{(\d+)\}\{(\d+)\}\s*|\s*(-?)(\d+)\s*/\s*(\d+)\s*", text
    )
    if not match:
        return None
    sign, numerator, denominator = (
        (match[1], match[2], match[3]) if match[2] else (match[4], match[5], match[6])
    )
    if int(denominator) == 0:
        return None
    value = Decimal(int(numerator)) / Decimal(int(denominator))
    return normalize_number(f"{sign}{value:f}")


def _after_marker(text: str) -> str | None:
    """The number stated by the last "the answer is"-style marker that states one.

    When the statement is a calculation ("the answer is 16 - 3 - 4 = 9") the
    result after the last ``=`` counts, not the first operand.
    """
    for match in reversed(list(_ANSWER_IS_RE.finditer(text))):
        window = _unformat(text[match.end() : match.end() + _MARKER_GAP]).lstrip()
        statement = re.split(r"\n|(?<=[^\d])\.(?:\s|$)|\.\s", window, maxsplit=1)[0]
        if "=" in statement:
            number = _last_number(statement.rsplit("=", 1)[1])
            if number is not None:
                return number
        found = _NUMBER_RE.search(statement)
        if found and len(statement[: found.start()].split()) <= _MARKER_WORDS:
            return normalize_number(found.group(0))
    return None


def _last_prose_number(text: str) -> str | None:
    for line in reversed(_without_code(text).splitlines()):
        number = _last_number(line)
        if number is not None:
            return number
    return None


def extract_number(text: str) -> str | None:
    """The final numeric answer of ``text``, normalized (see :func:`normalize_number`)."""
    if not text:
        return None
    text = _strip_open_fence(text)
    for finder in (_boxed, _hashes, _after_marker, _output, _last_prose_number):
        number = finder(text)
        if number is not None:
            return number
    return None


def _hashes(text: str) -> str | None:
    matches = _HASHES_RE.findall(_unformat(text))
    return normalize_number(matches[-1]) if matches else None


def _output(text: str) -> str | None:
    matches = _OUTPUT_RE.findall(text)
    return normalize_number(matches[-1]) if matches else None


# -- multiple choice ----------------------------------------------------------------------

_LETTERS = "ABCDEFGHIJ"


def _letter_class(n: int) -> str:
    return f"[{_LETTERS[:n]}]"


def _choice_letter(text: str, count: int = len(_LETTERS)) -> str | None:
    """The option letter ``text`` states (among the first ``count``), or ``None``."""
    if not text:
        return None
    letters = _letter_class(count)
    explicit = [
        rf"(?i:answer)\W{{0,4}}(?:(?i:is)\s*)?(?:(?i:option)\s*)?[:\s]*\**\s*\(?({letters})\b(?!')",
        rf"\\boxed\s*\{{\s*(?:\\text\{{)?\s*({letters})\b",
        rf"(?m)^\s*\**\s*\(?({letters})\)?\s*\**\s*[.:]?\s*$",
    ]
    for pattern in explicit:
        matches = re.findall(pattern, text)
        if matches:
            return str(matches[-1])
    # Weaker signals count only when they name a single letter: a reply that restates
    # every option ("A. ..., B. ...") has chosen none of them.
    for pattern in (rf"(?m)^\s*\**\s*\(?({letters})[.)]", rf"\(({letters})\)"):
        distinct = set(re.findall(pattern, text))
        if len(distinct) == 1:
            return str(distinct.pop())
    return None


def extract_choice(text: str, choices: Sequence[str]) -> int | None:
    """The index of the chosen option (``A`` = 0) or ``None`` when no choice is clear."""
    letter = _choice_letter(text, len(choices))
    if letter is not None:
        return _LETTERS.index(letter)
    return _by_choice_text(text, choices) if text else None


def _by_choice_text(text: str, choices: Sequence[str]) -> int | None:
    """The one choice whose text appears in the reply (none or several: undecided)."""
    lowered = text.lower()
    found = [i for i, c in enumerate(choices) if c.strip() and c.strip().lower() in lowered]
    return found[0] if len(found) == 1 else None


# -- any kind of answer, for comparing replies with each other ----------------------------

_ANY_LETTER_RE = re.compile(rf"\b([{_LETTERS}])\b")


def _words(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".")


def extract_answer(
    text: str, kind: AnswerKind = "number", pattern: str | None = None
) -> str | None:
    """The normalised final answer of ``text`` (``None`` when it states none).

    ``pattern`` is a regular expression whose last match (its group, if it has
    one) is the answer; otherwise ``kind`` says what to read: the final number,
    the chosen letter, the last line or the whole text (case and spacing folded).
    """
    if not text or not text.strip():
        return None
    if pattern is not None:
        matches = re.findall(pattern, text)
        return str(matches[-1]).strip() if matches else None
    if kind == "text":
        return _words(text)
    if kind == "last_line":
        lines = [line for line in text.splitlines() if line.strip()]
        return _words(lines[-1])
    if kind == "number":
        return extract_number(text)
    letter = _choice_letter(text)
    if letter is not None:
        return letter
    # With no option texts to match, a bare letter is the only remaining signal.
    letters = _ANY_LETTER_RE.findall(text)
    return str(letters[-1]) if letters else None
