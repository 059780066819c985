"""Where the run history lives, what it keeps and for how long.

The history is on by default; each front door has its own switch
(``moa run --no-log``, ``history: false`` in a config file,
``moa serve --no-history``). The file is ``$MOA_HOME/history.sqlite`` when
``MOA_HOME`` is set, else ``history.sqlite`` in the user data directory
(``$XDG_DATA_HOME/moa``, by default ``~/.local/share/moa``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from moa.errors import ConfigError

__all__ = [
    "HOME_ENV",
    "KEEP_DAYS_ENV",
    "ContentPolicy",
    "HistorySettings",
    "default_history_path",
]

HOME_ENV = "MOA_HOME"
"""Folder of the history file (and nothing else yet); overrides the user data directory."""
KEEP_DAYS_ENV = "MOA_HISTORY_DAYS"
"""Runs older than this many days are deleted when a writer opens the history; unset keeps all."""

ContentPolicy = Literal["full", "none"]
"""``full`` keeps every message and answer; ``none`` keeps only the run's shape and numbers."""


def default_history_path() -> Path:
    """``$MOA_HOME/history.sqlite``, else the user data directory's ``moa/history.sqlite``."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser() / "history.sqlite"
    data = os.environ.get("XDG_DATA_HOME")
    base = Path(data).expanduser() if data else Path.home() / ".local" / "share"
    return base / "moa" / "history.sqlite"


def _keep_days_from_env() -> float | None:
    value = os.environ.get(KEEP_DAYS_ENV, "").strip()
    if not value:
        return None
    try:
        days = float(value)
    except ValueError:
        days = -1.0
    if days <= 0:
        raise ConfigError(f"{KEEP_DAYS_ENV} must be a positive number of days, not {value!r}")
    return days


@dataclass(frozen=True)
class HistorySettings:
    """How one process records its runs."""

    path: Path
    content: ContentPolicy = "full"
    keep_days: float | None = None
    """Delete runs older than this when the history is opened for writing (``None``: keep all)."""

    @classmethod
    def from_env(cls, *, content: ContentPolicy = "full") -> HistorySettings:
        """The default file and ``$MOA_HISTORY_DAYS``."""
        return cls(default_history_path(), content, _keep_days_from_env())
