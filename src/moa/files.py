"""Files that hold what people asked and what models answered: readable by their owner only."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["private_file"]


def private_file(path: Path) -> Path:
    """Create ``path`` (and its folder) with mode 0600 unless it exists; return it.

    A store then opened on it (SQLite, whose journal and WAL files take the
    database's mode) keeps that mode, whatever the process's umask would give.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return path
