"""Pull the final answer out of a free-text reply, for voting on exact-answer tasks.

Models show their work, so the answer is looked for where people put it: a
``\\boxed{}`` value, a ``####`` line, "the answer is ...", an ``Answer:`` line,
and only then the last number (or choice letter) anywhere in the text.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["AnswerKind", "extract_answer"]

AnswerKind = Literal["number", "choice", "last_line", "text"]

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_HASHES = re.compile(r"####\s*([^\n]+)")
_STATED = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*\**\s*([^\n]+)", re.IGNORECASE
)
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_CHOICE = re.compile(r"\b([A-J])\b")


def _number(text: str, *, last: bool = True) -> str | None:
    found = _NUMBER.findall(text)
    if not found:
        return None
    raw = (found[-1] if last else found[0]).replace(",", "").replace("$", "")
    try:
        value = float(raw)
    except ValueError:
        return None
    return str(int(value)) if value == int(value) else f"{value:g}"


def _stated(text: str) -> list[str]:
    """Places where the reply states its answer explicitly, last one first."""
    spots = _BOXED.findall(text) + _HASHES.findall(text) + _STATED.findall(text)
    ordered = sorted((text.rfind(spot), spot) for spot in spots if spot.strip())
    return [spot for _, spot in reversed(ordered)]


def extract_answer(
    text: str, kind: AnswerKind = "number", pattern: str | None = None
) -> str | None:
    """The normalised final answer of ``text``, or ``None`` when there is none to find."""
    if not text or not text.strip():
        return None
    if pattern is not None:
        matches = re.findall(pattern, text)
        return str(matches[-1]).strip() if matches else None
    if kind == "text":
        return " ".join(text.lower().split()).rstrip(".")
    if kind == "last_line":
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        return " ".join(lines[-1].lower().split()).rstrip(".") if lines else None
    for spot in _stated(text):
        value = _number(spot, last=False) if kind == "number" else _choice(spot)
        if value is not None:
            return value
    return _number(text) if kind == "number" else _choice(text)


def _choice(text: str) -> str | None:
    found = _CHOICE.findall(text)
    return found[-1] if found else None
