"""The run history: one SQLite file, safe to share between threads and processes.

WAL mode lets readers (``moa logs``, the server's ``/v1/moa/runs``) work while
writers (every ``moa serve`` worker, every ``moa run``) append; a busy file is
waited for, not failed. The file and its folder are created readable by their
owner only, since they hold whole conversations. Questions and answers are
indexed with FTS5 for ``moa logs -q``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moa.errors import ConfigError
from moa.history.capture import FinishedRun
from moa.history.rows import CALL_COLUMNS, RUN_COLUMNS, StoredRun, call_rows, run_row
from moa.history.settings import ContentPolicy

__all__ = ["HistoryStore", "RunFilter"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, created REAL NOT NULL, source TEXT, mixture TEXT, mixture_hash TEXT,
    mixture_yaml TEXT, trace_id TEXT, question TEXT, output TEXT, conversation TEXT,
    prompt_tokens INTEGER, completion_tokens INTEGER, calls INTEGER, cost REAL,
    latency_s REAL, ttft_s REAL, failures INTEGER, error TEXT, cancelled INTEGER,
    content TEXT, replay_of TEXT, layers TEXT, notes TEXT, models TEXT
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created);
CREATE TABLE IF NOT EXISTS calls (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE, position INTEGER NOT NULL,
    kind TEXT, layer INTEGER, idx INTEGER, agent TEXT, role TEXT, model TEXT, messages TEXT,
    params TEXT, output TEXT, error TEXT, error_type TEXT, prompt_tokens INTEGER,
    completion_tokens INTEGER, usage_calls INTEGER, latency_s REAL, ttft_s REAL,
    attempts INTEGER, finish_reason TEXT, cost REAL, partial INTEGER, notes TEXT,
    started_at REAL, PRIMARY KEY (run_id, position)
);
CREATE INDEX IF NOT EXISTS calls_model ON calls (model);
CREATE VIRTUAL TABLE IF NOT EXISTS runs_fts USING fts5 (run_id UNINDEXED, question, output);
"""


@dataclass(frozen=True)
class RunFilter:
    """Which runs to list: all filters must hold; ``query`` is FTS5 syntax."""

    query: str | None = None
    mixture: str | None = None
    model: str | None = None
    """A model id, or part of one (``qwen`` matches ``local:qwen2.5-coder-1.5b``)."""
    since: float | None = None
    until: float | None = None
    failed: bool = False
    source: str | None = None
    limit: int | None = 20
    offset: int = 0

    def sql(self) -> tuple[str, list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        if self.query:
            where.append("id IN (SELECT run_id FROM runs_fts WHERE runs_fts MATCH ?)")
            args.append(self.query)
        if self.mixture:
            where.append("mixture = ?")
            args.append(self.mixture)
        if self.model:
            where.append("EXISTS (SELECT 1 FROM calls WHERE run_id = runs.id AND instr(model, ?))")
            args.append(self.model)
        if self.since is not None:
            where.append("created >= ?")
            args.append(self.since)
        if self.until is not None:
            where.append("created < ?")
            args.append(self.until)
        if self.failed:
            where.append("(failures > 0 OR cancelled)")
        if self.source:
            where.append("source = ?")
            args.append(self.source)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created DESC"
        if self.limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [self.limit, self.offset]
        return sql, args


def _create_private(path: Path) -> None:
    """Create the folder (0700) and an empty file (0600) before SQLite opens it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)


class HistoryStore:
    """Runs and their calls in one SQLite file (see the module docstring)."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        if not create and not self.path.is_file():
            raise ConfigError(
                f"no run history at {str(self.path)!r} yet: runs are recorded by moa run, "
                "moa chat and moa serve (set MOA_HOME to use another folder)"
            )
        try:
            if create:
                _create_private(self.path)
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # safe under WAL; a crash loses no commit
            conn.execute("PRAGMA foreign_keys = ON")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(
                f"cannot open the run history {str(self.path)!r}: {exc}; "
                "set MOA_HOME to another folder or turn the history off (--no-log)"
            ) from exc
        self._conn = conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- writing ------------------------------------------------------------------------

    def add(self, runs: Iterable[FinishedRun], content: ContentPolicy = "full") -> int:
        """Store ``runs`` in one transaction; returns how many."""
        run_sql = _insert("runs", RUN_COLUMNS)
        call_sql = _insert("calls", CALL_COLUMNS)
        count = 0
        with self._lock, self._conn:
            for run in runs:
                row = run_row(run, content)
                self._conn.execute(run_sql, [row[c] for c in RUN_COLUMNS])
                self._conn.executemany(
                    call_sql, [[r[c] for c in CALL_COLUMNS] for r in call_rows(run, content)]
                )
                self._conn.execute(
                    "INSERT INTO runs_fts (run_id, question, output) VALUES (?, ?, ?)",
                    (row["id"], row["question"], row["output"] or ""),
                )
                count += 1
        return count

    def prune(self, *, older_than_days: float) -> int:
        """Delete runs started more than ``older_than_days`` ago; returns how many."""
        cutoff = time.time() - older_than_days * 86400
        with self._lock, self._conn:
            ids = [
                r[0] for r in self._conn.execute("SELECT id FROM runs WHERE created < ?", (cutoff,))
            ]
            self._delete(ids)
        return len(ids)

    def delete(self, run_ids: Sequence[str]) -> None:
        with self._lock, self._conn:
            self._delete(run_ids)

    def _delete(self, run_ids: Sequence[str]) -> None:
        for start in range(0, len(run_ids), 500):
            chunk = list(run_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            self._conn.execute(f"DELETE FROM runs_fts WHERE run_id IN ({marks})", chunk)
            self._conn.execute(f"DELETE FROM calls WHERE run_id IN ({marks})", chunk)
            self._conn.execute(f"DELETE FROM runs WHERE id IN ({marks})", chunk)

    # -- reading ------------------------------------------------------------------------

    def runs(self, where: RunFilter | None = None) -> list[StoredRun]:
        """Runs matching ``where``, newest first, with their calls."""
        sql, args = (where or RunFilter()).sql()
        with self._lock:
            try:
                rows = self._conn.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                if "fts5" in str(exc) or "MATCH" in sql:
                    raise ConfigError(
                        f"cannot search for {where.query if where else ''!r}: {exc} "
                        '(full-text syntax: words, "a phrase", OR, NOT, prefix*)'
                    ) from exc
                raise
            return [self._with_calls(row) for row in rows]

    def iter_runs(self, where: RunFilter | None = None) -> Iterator[StoredRun]:
        """Every run matching ``where`` (no limit), newest first, a page at a time."""
        base = where or RunFilter()
        offset = 0
        while True:
            page = self.runs(RunFilter(**{**base.__dict__, "limit": 200, "offset": offset}))
            yield from page
            if len(page) < 200:
                return
            offset += 200

    def get(self, run_id: str) -> StoredRun:
        """The run whose id is or starts with ``run_id`` (a unique prefix is enough)."""
        if not run_id or any(c not in "0123456789abcdef" for c in run_id.lower()):
            raise ConfigError(f"{run_id!r} is not a run id (see moa logs for the ids)")
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM runs WHERE id >= ? AND id < ? LIMIT 2",
                (run_id.lower(), run_id.lower() + "g"),
            ).fetchall()
            if len(rows) > 1:
                raise ConfigError(f"several runs start with {run_id!r}; give more of the id")
            if not rows:
                raise ConfigError(f"no run {run_id!r} in the history at {str(self.path)!r}")
            return self._with_calls(rows[0])

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM runs").fetchone()[0])

    def _with_calls(self, row: sqlite3.Row) -> StoredRun:
        calls = self._conn.execute(
            "SELECT * FROM calls WHERE run_id = ? ORDER BY position", (row["id"],)
        ).fetchall()
        return StoredRun(dict(row), tuple(dict(c) for c in calls))


def _insert(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
