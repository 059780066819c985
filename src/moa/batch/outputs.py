"""Writing a batch's output so that nothing finished is ever lost.

Every record is appended to a JSONL *journal* and flushed the moment it
arrives, so Ctrl-C, a crash or a lost cluster keeps everything answered so far.
For Batch API input the journal is the output file itself; for a table it is
``OUTPUT.partial.jsonl`` beside the output, turned into the table (in input
order, with the answer columns added) once every row has its record.

A rerun reads the journal back, keeps the final records (answered, or refused
for good) and sends only the rest; records of lines that failed upstream are
dropped and tried again.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from moa.batch.answer import dumps, outcome
from moa.batch.inputs import InputKind
from moa.errors import ConfigError
from moa.jsonl import json_lines

__all__ = ["ANSWER_COLUMNS", "Journal", "journal_path", "write_table"]

ANSWER_COLUMNS = (
    "answer",
    "error",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost",
)
"""The columns a table gains: the mixture's answer (or why there is none), tokens and cost."""


def journal_path(output: Path, kind: InputKind) -> Path:
    return output if kind == "openai" else output.with_name(output.name + ".partial.jsonl")


class Journal:
    """The append-only record of finished requests, keyed by item key."""

    def __init__(self, path: Path, kind: InputKind) -> None:
        self.path = path
        self.kind = kind
        self.lines: dict[str, str] = {}
        """Key → output line, for every record kept or written in this run."""
        self._handle: IO[str] | None = None

    def resume(self, keys: Iterable[str]) -> int:
        """Keep the final records of ``keys`` already in the file; return how many.

        The file is rewritten with just those lines (a line cut short by a crash,
        failed requests and records of lines no longer in the input go).
        """
        wanted = set(keys)
        if self.path.exists():
            for line in json_lines(self.path.read_text("utf-8")):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if not isinstance(record, dict):
                    continue
                key = outcome(self.kind, record).key
                if key in wanted and key not in self.lines:
                    self.lines[key] = line
        self.rewrite(list(self.lines))
        return len(self.lines)

    def rewrite(self, order: Sequence[str]) -> None:
        """Replace the file with the kept lines in ``order`` (atomically)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".tmp")
        with partial.open("w", encoding="utf-8") as handle:
            for key in order:
                if key in self.lines:
                    handle.write(self.lines[key] + "\n")
        os.replace(partial, self.path)

    def add(self, key: str, record: Mapping[str, Any]) -> bool:
        """Append ``record`` and flush; a key already recorded is ignored (returns ``False``)."""
        if key in self.lines:
            return False  # an engine retrying a lost worker may deliver a record twice
        line = dumps(dict(record))
        if self._handle is None:
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write(line + "\n")
        self._handle.flush()
        self.lines[key] = line
        return True

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def write_table(
    path: Path,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    records: Sequence[Mapping[str, Any] | None],
) -> None:
    """Write ``rows`` with the answer columns of ``records`` added, by ``path``'s suffix."""
    names = [c for c in columns if c not in ANSWER_COLUMNS] + list(ANSWER_COLUMNS)
    table = []
    for row, record in zip(rows, records, strict=True):
        merged = {name: row.get(name) for name in names if name not in ANSWER_COLUMNS}
        merged.update({name: (record or {}).get(name) for name in ANSWER_COLUMNS})
        table.append(merged)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        with partial.open("w", encoding="utf-8") as handle:
            for row in table:
                handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    elif suffix == ".csv":
        with partial.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=names)
            writer.writeheader()
            for row in table:
                writer.writerow({k: _cell(v) for k, v in row.items()})
    elif suffix == ".parquet":
        from moa.batch.inputs import _pyarrow_parquet

        parquet = _pyarrow_parquet()
        import pyarrow

        parquet.write_table(pyarrow.Table.from_pylist(table), partial)
    else:
        raise ConfigError(
            f"cannot write {path.name!r}: give the output a .jsonl, .csv or .parquet name"
        )
    os.replace(partial, path)


def _cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return value
