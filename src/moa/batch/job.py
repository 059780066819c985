"""A batch job: read the input, skip what a previous run finished, run the rest, write it out.

The engine only answers items; reading, resuming, the journal, the final table
and the totals are done here, once, whichever engine runs, so ``--engine
local`` and ``--engine ray`` give the same output for the same input.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from moa.batch.answer import MixtureFactory, Outcome, outcome, unreadable_record
from moa.batch.engine import Engine
from moa.batch.inputs import TABLE_SUFFIXES, BatchInput, BatchItem, read_input
from moa.batch.local import LocalEngine
from moa.batch.outputs import Journal, journal_path, write_table
from moa.errors import ConfigError

__all__ = ["BatchObserver", "BatchOptions", "BatchSummary", "run_batch"]


@dataclass(frozen=True)
class BatchOptions:
    """Where a batch comes from and goes to."""

    input: Path
    output: Path
    column: str | None = None
    """The prompt column of a table (default: ``messages``, else ``prompt``)."""
    model: str = "mixture"
    """The ``model`` of requests made from table rows (the mixture's name)."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Request fields for table rows, e.g. ``{"max_tokens": 256}``."""
    system: str | None = None
    """A system message put before each table row's prompt."""


@dataclass
class BatchSummary:
    """Totals of one run (``resumed`` counts records kept from earlier runs)."""

    total: int = 0
    resumed: int = 0
    done: int = 0
    failed: int = 0
    tokens: int = 0
    cost: float | None = None
    wall_s: float = 0.0
    output: Path | None = None
    complete: bool = False
    """Every item has its record (the table was written)."""

    def add(self, result: Outcome) -> None:
        if result.ok:
            self.done += 1
        else:
            self.failed += 1
        self.tokens += result.tokens
        if result.cost is not None:
            self.cost = (self.cost or 0.0) + result.cost


class BatchObserver(Protocol):
    """Told of progress (a progress bar, a log)."""

    def start(self, total: int, resumed: int) -> None: ...

    def advance(self, summary: BatchSummary) -> None: ...


def _check_output(options: BatchOptions, data: BatchInput) -> None:
    if options.output.resolve() == options.input.resolve():
        raise ConfigError("the output must be another file than the input")
    suffix = options.output.suffix.lower()
    allowed = (".jsonl",) if data.kind == "openai" else TABLE_SUFFIXES
    if suffix not in allowed:
        raise ConfigError(
            f"cannot write {options.output.name!r}: Batch API output is .jsonl"
            if data.kind == "openai"
            else f"cannot write {options.output.name!r}: give a .jsonl, .csv or .parquet name"
        )


def run_batch(
    options: BatchOptions,
    factory: MixtureFactory,
    engine: Engine | None = None,
    observer: BatchObserver | None = None,
) -> BatchSummary:
    """Run a batch; rerunning the same call resumes it. Ctrl-C keeps every finished record."""
    started = time.perf_counter()
    data = read_input(
        options.input,
        column=options.column,
        model=options.model,
        defaults=options.defaults,
        system=options.system,
    )
    _check_output(options, data)
    journal = Journal(journal_path(options.output, data.kind), data.kind)
    summary = BatchSummary(total=len(data.items), output=options.output)
    summary.resumed = journal.resume(item.key for item in data.items)
    if observer is not None:
        observer.start(summary.total, summary.resumed)

    def deliver(item: BatchItem, record: dict[str, Any]) -> None:
        if journal.add(item.key, record):
            summary.add(outcome(data.kind, record))
            if observer is not None:
                observer.advance(summary)

    pending = [item for item in data.items if item.key not in journal.lines]
    try:
        for item in pending:
            if item.request is None:
                deliver(item, unreadable_record(item, data.kind))
        runnable = [item for item in pending if item.request is not None]
        (engine or LocalEngine()).run(factory, data.kind, runnable, deliver)
    finally:
        journal.close()
        summary.wall_s = time.perf_counter() - started
    _finish(data, journal, options.output, summary)
    summary.wall_s = time.perf_counter() - started
    return summary


def _finish(data: BatchInput, journal: Journal, output: Path, summary: BatchSummary) -> None:
    """Put the output in input order; a table is written once every row is answered."""
    order = [item.key for item in data.items]
    summary.complete = all(key in journal.lines for key in order)
    if data.kind == "openai":
        journal.rewrite(order)
        return
    if not summary.complete:
        return
    records = [json.loads(journal.lines[key]) for key in order]
    write_table(output, data.rows, data.columns, records)
    journal.path.unlink()
