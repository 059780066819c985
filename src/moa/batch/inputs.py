"""Reading a batch's input: OpenAI Batch API request lines, or a table with a prompt column.

Both formats become the same thing, a list of :class:`BatchItem`: a key that
identifies the request across reruns, and the body of a Chat Completions
request as JSON text. A line or row that cannot become a request is kept as an
item with an ``error`` (it gets an error line in the output); it never stops
the others.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from moa.errors import ConfigError
from moa.jsonl import json_lines

__all__ = [
    "CHAT_URLS",
    "TABLE_SUFFIXES",
    "BatchInput",
    "BatchItem",
    "InputKind",
    "read_input",
    "read_table_rows",
]

InputKind = Literal["openai", "table"]
CHAT_URLS = frozenset({"/v1/chat/completions", "/chat/completions"})
"""The Batch API ``url`` a mixture answers; other endpoints get a per-line error."""
TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
PROMPT_COLUMNS = ("messages", "prompt")


@dataclass(frozen=True)
class BatchItem:
    """One request of a batch, as both engines see it (plain data, cheap to ship to workers)."""

    index: int
    """Position in the input (0-based line or row number)."""
    key: str
    """Identifies the request across reruns: its ``custom_id``, or ``row-N`` for a table row."""
    request: str | None
    """The Chat Completions request body as JSON text; ``None`` when the line is unusable."""
    error: str | None = None
    """Why the line cannot be sent (it is answered with this error, never dropped)."""
    custom_id: str | None = None


@dataclass(frozen=True)
class BatchInput:
    """A whole input file, read."""

    kind: InputKind
    items: list[BatchItem]
    rows: list[dict[str, Any]] = field(default_factory=list)
    """The table's rows, for writing them back with the answers (tables only)."""
    columns: list[str] = field(default_factory=list)


def read_input(
    path: Path,
    *,
    column: str | None = None,
    model: str = "mixture",
    defaults: Mapping[str, Any] | None = None,
    system: str | None = None,
) -> BatchInput:
    """Read ``path``: Batch API lines when its first record has ``custom_id``, else a table.

    ``model``, ``defaults`` (e.g. ``max_tokens``) and ``system`` (a system message)
    fill the requests made from table rows; Batch API lines carry their own
    bodies and are sent as written.
    """
    if not path.is_file():
        raise ConfigError(f"input file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ConfigError(
            f"cannot read {path.name!r}: give a .jsonl (Batch API requests or rows), "
            ".csv or .parquet file"
        )
    if suffix in (".jsonl", ".json"):
        lines = json_lines(path.read_text("utf-8"))
        if _looks_like_batch_requests(lines):
            if column is not None:
                raise ConfigError("--column is for tables; this file holds Batch API requests")
            return BatchInput("openai", list(_request_items(lines)))
    rows, columns = read_table_rows(path)
    return _table_input(rows, columns, column, model, dict(defaults or {}), system)


def _looks_like_batch_requests(lines: Sequence[str]) -> bool:
    for line in lines:
        if not line.strip():
            continue
        try:
            first = json.loads(line)
        except json.JSONDecodeError:
            continue  # judge by the first readable line; the bad one gets its own error
        return isinstance(first, dict) and "custom_id" in first
    return False


def _request_items(lines: Sequence[str]) -> Iterable[BatchItem]:
    seen: dict[str, int] = {}
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        number = index + 1

        def bad(message: str, custom_id: str | None = None, index: int = index) -> BatchItem:
            return BatchItem(index, f"#line-{index + 1}", None, message, custom_id)

        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            yield bad(f"line {number} is not valid JSON: {exc}")
            continue
        if not isinstance(data, dict):
            yield bad(f"line {number} is not a JSON object")
            continue
        custom_id = data.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            yield bad(f"line {number} has no custom_id (a non-empty string)")
            continue
        if custom_id in seen:
            yield bad(
                f"line {number}: custom_id {custom_id!r} repeats line {seen[custom_id]}; "
                "give every request its own",
                custom_id,
            )
            continue
        seen[custom_id] = number
        url, method = data.get("url"), data.get("method", "POST")
        if url not in CHAT_URLS or str(method).upper() != "POST":
            yield bad(
                f"line {number}: only POST /v1/chat/completions can run through a mixture, "
                f"not {method} {url}",
                custom_id,
            )
            continue
        body = data.get("body")
        if not isinstance(body, dict):
            yield bad(f"line {number}: body must be a JSON object", custom_id)
            continue
        yield BatchItem(index, custom_id, json.dumps(body, ensure_ascii=False), None, custom_id)


def read_table_rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of a JSONL, CSV or Parquet table and its column names, in order.

    An unreadable JSONL line becomes an empty row marked with ``_error``.
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = [dict(row) for row in reader]
            return rows, list(reader.fieldnames or [])
    if suffix == ".parquet":
        parquet = _pyarrow_parquet()
        table = parquet.read_table(path)
        return table.to_pylist(), list(table.column_names)
    rows = []
    columns: dict[str, None] = {}
    for number, line in enumerate(json_lines(path.read_text("utf-8")), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append({"_error": f"line {number} is not valid JSON: {exc}"})
            continue
        if not isinstance(row, dict):
            rows.append({"_error": f"line {number} is not a JSON object"})
            continue
        rows.append(row)
        columns.update(dict.fromkeys(row))
    return rows, list(columns)


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as parquet
    except ImportError as exc:
        raise ConfigError(
            "Parquet files need pyarrow: pip install pyarrow "
            "(or pip install 'mixture-of-agents[ray]', which brings it)"
        ) from exc
    return parquet


def _table_input(
    rows: list[dict[str, Any]],
    columns: list[str],
    column: str | None,
    model: str,
    defaults: dict[str, Any],
    system: str | None,
) -> BatchInput:
    chosen = column or next((c for c in PROMPT_COLUMNS if c in columns), None)
    if chosen is None or chosen not in columns:
        wanted = repr(column) if column else "'prompt' or 'messages'"
        raise ConfigError(
            f"the table has no {wanted} column (its columns: {', '.join(columns) or 'none'}); "
            "name the prompt column with --column"
        )
    items = []
    for index, row in enumerate(rows):
        key = f"row-{index}"
        if "_error" in row:
            items.append(BatchItem(index, key, None, str(row.pop("_error"))))
            continue
        try:
            messages = _messages(row.get(chosen))
        except ValueError as exc:
            items.append(BatchItem(index, key, None, f"row {index}: {exc}"))
            continue
        if system is not None:
            messages = [{"role": "system", "content": system}, *messages]
        body = {"model": model, **defaults, "messages": messages}
        items.append(BatchItem(index, key, json.dumps(body, ensure_ascii=False)))
    return BatchInput("table", items, rows, columns)


def _messages(value: Any) -> list[Any]:
    """A prompt cell as Chat Completions messages: a string, a message list, or its JSON text."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list):
                return parsed
        if not text:
            raise ValueError("the prompt is empty")
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and value:
        return list(value)
    raise ValueError("the prompt is empty" if value in (None, []) else "the prompt is not text")
