"""Splitting JSON Lines text into its records' lines.

Only a newline ends a record. ``str.splitlines()`` also splits at U+2028, U+2029,
U+0085, form feeds and other separators that JSON leaves unescaped inside strings,
so a valid file (MMLU-Redux has such questions) would read as broken JSON.
"""

from __future__ import annotations

__all__ = ["json_lines"]


def json_lines(text: str) -> list[str]:
    """The lines of ``text`` split at ``\\n`` only, each without a trailing ``\\r``."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]
