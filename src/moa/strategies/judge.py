"""Reading a judge's verdict: which candidates it ranked best, and whether to stop.

Small models rarely follow a format exactly, so parsing is lenient: the
numbers after the last ``Best:`` line, else every candidate number in the
reply in order of appearance. A verdict with no usable number is ``[]`` and
the caller falls back (and says so in the run's notes).
"""

from __future__ import annotations

import re

__all__ = ["parse_ranking", "parse_stop"]

_BEST = re.compile(r"best[^:\n]*[:=]\s*([^\n]*)", re.IGNORECASE)
_STOP = re.compile(r"stop\s*[:=]\s*\**\s*(yes|no|true|false)", re.IGNORECASE)
_NUMBER = re.compile(r"\d+")


def _numbers(text: str, count: int) -> list[int]:
    seen: list[int] = []
    for match in _NUMBER.finditer(text):
        number = int(match.group())
        if 1 <= number <= count and number - 1 not in seen:
            seen.append(number - 1)
    return seen


def parse_ranking(text: str, count: int) -> list[int]:
    """0-based indexes of the candidates the judge put first, best first."""
    lines = _BEST.findall(text)
    if lines:
        ranked = _numbers(lines[-1], count)
        if ranked:
            return ranked
    return _numbers(text, count)


def parse_stop(text: str) -> bool:
    """Whether the judge said the best answer needs no further revision."""
    match = _STOP.search(text)
    return bool(match) and match.group(1).lower() in ("yes", "true")  # type: ignore[union-attr]
