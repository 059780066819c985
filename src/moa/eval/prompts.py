"""Prompt templates of the evaluation: shipped as package data, replaceable by the user.

A template names its blanks ``{like_this}``; only the blanks a task fills are
replaced, so any other braces (code, JSON) in a user's template stay as written.
The values are answers written by the models under test, so they are put in
once (a ``{blank}`` inside an answer stays text), and lines in them that copy one
of the template's own bracketed frame lines (``[End of response A]``), or a
verdict mark (``[[A]]``), get a zero-width space after their first bracket.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from moa.errors import ConfigError

__all__ = ["PromptSet", "fill"]


_BLANK = re.compile(r"\{(\w+)\}")
_FRAME_LINE = re.compile(r"^\[[^\[\]\n]+\]$", re.MULTILINE)
_BREAK = "\u200b"


def fill(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each ``{name}`` of ``values`` replaced by its value, disarmed."""
    frames = sorted(set(_FRAME_LINE.findall(template)), key=len, reverse=True)

    def disarm(value: str) -> str:
        for frame in frames:
            value = value.replace(frame, "[" + _BREAK + frame[1:])
        return value.replace("[[", "[" + _BREAK + "[")

    def blank(match: re.Match[str]) -> str:
        name = match.group(1)
        return disarm(values[name]) if name in values else match.group(0)

    return _BLANK.sub(blank, template)


@dataclass(frozen=True)
class PromptSet:
    """Where templates come from: ``override_dir`` first (same file names), then the package."""

    override_dir: Path | None = None
    files: Mapping[str, Path] = field(default_factory=dict)
    """Explicit files by template name, e.g. ``{"judge_pairwise": Path("mine.txt")}``."""

    def get(self, name: str) -> str:
        """The text of template ``name`` (e.g. ``judge_pairwise``)."""
        path = self.files.get(name)
        if path is None and self.override_dir is not None:
            candidate = self.override_dir / f"{name}.txt"
            path = candidate if candidate.is_file() else None
        if path is not None:
            try:
                return path.read_text("utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot read prompt file {str(path)!r}: {exc}") from exc
        entry = resources.files("moa").joinpath(f"prompts/{name}.txt")
        if not entry.is_file():
            raise ConfigError(f"no prompt template named {name!r}")
        return entry.read_text("utf-8")
