"""The per-item log of a run: one JSON line per (system, item), appended as items finish.

Appending a whole line at a time and flushing it means an interrupted run keeps
every item that finished; reading the log back tells a rerun what is left. A
record counts only for the system *configuration* that wrote it (its ``key``),
so changing a system's settings never reuses stale answers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["ItemLog"]


class ItemLog:
    """``items.jsonl`` of one output directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if not self.path.is_file():
            return
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash: that item simply runs again
                if isinstance(record, dict):
                    yield record

    def latest(self) -> dict[tuple[str, str], dict[str, Any]]:
        """The last record of every (system key, item id) pair."""
        return {(r.get("key", ""), str(r.get("item_id"))): r for r in self}

    def completed(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Records that need no rerun: those that finished without an error."""
        return {k: r for k, r in self.latest().items() if not r.get("error")}

    def append(self, record: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self.path.open("a+b") as handle:
            # After a crash mid-write the file ends inside a line: start a fresh one.
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    line = "\n" + line
            handle.write(line.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
