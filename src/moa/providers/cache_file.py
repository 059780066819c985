"""Call logs: the calls of a cache as a file, to carry them to another machine or commit them.

A call log is JSON Lines (gzip-compressed when its name ends in ``.gz``): a
header line, then one stored call per line, keyed by the same digest as the
cache (:func:`~moa.providers.cache.cache_key`). Importing adds the calls the
cache lacks and leaves the others alone, so a report committed with its call
log can be rebuilt, checked or extended elsewhere without calling a model
again for what it already answered.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from moa.errors import ConfigError
from moa.files import private_file
from moa.providers.cache import KEY_VERSION, ROW_FIELDS, CallRecording, SQLiteCallStore

__all__ = ["export_calls", "import_calls", "read_calls", "write_recording"]

FORMAT = "moa-call-log"
FORMAT_VERSION = 1


@contextmanager
def _open(path: Path, mode: str) -> Iterator[IO[str]]:
    if path.suffix == ".gz":
        # No name and no time in the header: the same calls give the same bytes, so a
        # committed log changes only with its calls.
        with (
            path.open(mode[0] + "b") as file,
            gzip.GzipFile(filename="", mode=mode[0] + "b", fileobj=file, mtime=0) as raw,
            io.TextIOWrapper(raw, encoding="utf-8", newline="\n") as text,
        ):
            yield text
    else:
        with path.open(mode, encoding="utf-8", newline="\n") as text:
            yield text


def export_calls(
    store: SQLiteCallStore,
    path: str | Path,
    *,
    models: Sequence[str] = (),
    excluding: Sequence[str | Path] = (),
) -> int:
    """Write the store's calls (of ``models`` only, when given) to ``path``; returns how many.

    Calls that the call logs ``excluding`` already hold (the same key and the same answer)
    are left out, so a report's log can carry only the calls its run added to those of
    earlier reports. A call whose key is there with another answer (the same request
    decoded again, e.g. in another batch) is kept: it is what this run saw."""
    known = {(row["key"], row["text"]) for log in excluding for row in read_calls(log)}
    rows = [row for row in store.rows(models) if (row["key"], row["text"]) not in known]
    return _write(path, rows)


def write_recording(recording: CallRecording, path: str | Path) -> int:
    """Add the calls ``recording`` noted (``recording_calls``) to the call log ``path``.

    A log already there keeps its calls, so a run resumed with the same log (whose finished
    items make no call) ends with every call of every session. A call noted again replaces
    its row: it is what the cache held for this run. Returns the calls in the log."""
    target = Path(path).expanduser()
    rows: dict[str, Mapping[str, Any]] = {}
    if target.exists():
        rows = {row["key"]: row for row in read_calls(target)}
    for cache, keys in recording.keys.items():
        store = SQLiteCallStore(cache)
        try:
            rows.update((row["key"], row) for row in store.rows(keys=keys))
        finally:
            store.close()
    return _write(target, rows.values())


def _write(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write the log next to ``path``, then put it in place: a log that held calls is never
    left half written."""
    target = Path(path).expanduser()
    partial = private_file(target.with_name(f".partial-{target.name}"))
    count = 0
    try:
        with _open(partial, "w") as out:
            header = {"format": FORMAT, "version": FORMAT_VERSION, "key_version": KEY_VERSION}
            out.write(json.dumps(header) + "\n")
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
                count += 1
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return count


def import_calls(store: SQLiteCallStore, path: str | Path) -> tuple[int, int]:
    """Add the calls of ``path`` that ``store`` lacks: ``(added, calls in the file)``."""
    rows = read_calls(path)
    return store.add_rows(rows), len(rows)


def read_calls(path: str | Path) -> list[dict[str, Any]]:
    """The stored calls of the call log ``path`` (checked line by line)."""
    source = Path(path).expanduser()
    if not source.is_file():
        raise ConfigError(f"no call log at {str(source)!r}")
    rows: list[dict[str, Any]] = []
    try:
        with _open(source, "r") as lines:
            _check_header(source, next(lines, ""))
            for number, line in enumerate(lines, start=2):
                if line.strip():
                    rows.append(_row(source, number, line))
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the call log {str(source)!r}: {exc}") from exc
    return rows


def _check_header(source: Path, line: str) -> None:
    try:
        header = json.loads(line)
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ConfigError(f"{str(source)!r} is not a call log (written by 'moa cache export')")
    if header.get("version") != FORMAT_VERSION or header.get("key_version") != KEY_VERSION:
        raise ConfigError(
            f"{str(source)!r} is a call log of another version "
            f"(format {header.get('version')}, keys {header.get('key_version')}); this moa "
            f"reads format {FORMAT_VERSION} with keys {KEY_VERSION}"
        )


def _row(source: Path, number: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{str(source)!r}, line {number}: not JSON ({exc.msg})") from exc
    missing = [name for name in ROW_FIELDS if not isinstance(row, dict) or name not in row]
    if missing:
        raise ConfigError(f"{str(source)!r}, line {number}: missing {', '.join(missing)}")
    if not isinstance(row["key"], str) or not isinstance(row["text"], str):
        raise ConfigError(f"{str(source)!r}, line {number}: key and text must be strings")
    return {name: row[name] for name in ROW_FIELDS}
