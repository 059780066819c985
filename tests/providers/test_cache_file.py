"""Call logs: a cache's calls written to a file and added to another cache."""

from __future__ import annotations

import gzip
import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moa import Mixture, MixtureSpec
from moa.cli.main import app
from moa.errors import CacheMissError, ConfigError
from moa.providers.cache import CachedCall, CachingRegistry, SQLiteCallStore, recording_calls
from moa.providers.cache_file import export_calls, import_calls, read_calls, write_recording
from moa.testing import FakeProvider
from moa.types import Usage

SPEC = MixtureSpec.model_validate(
    {
        "layers": [[{"model": "fake:a", "seed": 1}, {"model": "fake:b", "temperature": 0.7}]],
        "aggregator": {"model": "fake:agg"},
    }
)


def _run(store: SQLiteCallStore) -> FakeProvider:
    fake = FakeProvider(replies={"a": "4", "b": "5", "agg": "It is 4."})
    Mixture(SPEC, CachingRegistry(store=store).add("fake", fake)).run("2+2?")
    return fake


@pytest.mark.parametrize("name", ["calls.jsonl", "calls.jsonl.gz"])
def test_an_imported_log_answers_every_call(tmp_path: Path, name: str) -> None:
    origin = SQLiteCallStore(tmp_path / "origin.sqlite")
    assert len(_run(origin).calls) == 3
    assert export_calls(origin, tmp_path / name) == 3

    elsewhere = SQLiteCallStore(tmp_path / "elsewhere.sqlite")
    assert import_calls(elsewhere, tmp_path / name) == (3, 3)
    assert _run(elsewhere).calls == []  # nothing reached the provider
    assert elsewhere.rows() == origin.rows()
    assert import_calls(elsewhere, tmp_path / name) == (0, 3)  # a second import adds nothing


def test_import_keeps_the_calls_a_cache_already_has(tmp_path: Path) -> None:
    origin = SQLiteCallStore(tmp_path / "origin.sqlite")
    _run(origin)
    export_calls(origin, tmp_path / "calls.jsonl")
    key = origin.rows()[0]["key"]
    mine = SQLiteCallStore(tmp_path / "mine.sqlite")
    mine.put(key, "fake", "a", CachedCall("my own answer", Usage(1, 2), "stop", 0.5))
    assert import_calls(mine, tmp_path / "calls.jsonl") == (2, 3)
    stored = mine.get(key)
    assert stored is not None and stored.text == "my own answer"


def test_export_of_some_models_and_the_same_bytes_for_the_same_calls(tmp_path: Path) -> None:
    store = SQLiteCallStore(tmp_path / "calls.sqlite")
    _run(store)
    assert export_calls(store, tmp_path / "agg.jsonl", models=["fake:agg"]) == 1
    lines = (tmp_path / "agg.jsonl").read_text().splitlines()
    assert json.loads(lines[1])["text"] == "It is 4."
    export_calls(store, tmp_path / "one.jsonl.gz")
    export_calls(store, tmp_path / "two.jsonl.gz")
    assert (tmp_path / "one.jsonl.gz").read_bytes() == (tmp_path / "two.jsonl.gz").read_bytes()


def test_export_leaves_out_the_calls_earlier_logs_hold(tmp_path: Path) -> None:
    store = SQLiteCallStore(tmp_path / "calls.sqlite")
    _run(store)
    export_calls(store, tmp_path / "aggregator.jsonl.gz", models=["fake:agg"])
    assert (
        export_calls(store, tmp_path / "new.jsonl", excluding=[tmp_path / "aggregator.jsonl.gz"])
        == 2
    )
    models = {
        json.loads(line)["model"] for line in (tmp_path / "new.jsonl").read_text().splitlines()[1:]
    }
    assert models == {"a", "b"}
    # The same request answered differently (decoded again) is not the same call: kept.
    row = store.rows(["fake:agg"])[0]
    other = SQLiteCallStore(tmp_path / "other.sqlite")
    other.put(row["key"], "fake", "agg", CachedCall("It is 5.", Usage(1, 2), "stop", 0.5))
    export_calls(other, tmp_path / "other.jsonl")
    assert export_calls(store, tmp_path / "kept.jsonl", excluding=[tmp_path / "other.jsonl"]) == 3
    cache = ["--cache", str(tmp_path / "calls.sqlite")]
    logs = [
        "--except",
        str(tmp_path / "aggregator.jsonl.gz"),
        "--except",
        str(tmp_path / "new.jsonl"),
    ]
    result = CliRunner().invoke(
        app, ["cache", "export", str(tmp_path / "cli.jsonl"), *cache, *logs]
    )
    assert result.exit_code == 0 and "exported 0 calls" in result.output
    missing = CliRunner().invoke(
        app, ["cache", "export", str(tmp_path / "x.jsonl"), *cache, "--except", "none.jsonl"]
    )
    assert missing.exit_code == 2 and "no call log" in missing.output
    assert not (tmp_path / "x.jsonl").exists()  # nothing written when a log is missing


def test_files_that_are_not_call_logs_are_refused_with_the_reason(tmp_path: Path) -> None:
    store = SQLiteCallStore(tmp_path / "calls.sqlite")
    _run(store)
    good = tmp_path / "good.jsonl"
    export_calls(store, good)
    header, first, *_ = good.read_text().splitlines()

    cases = {
        "plain.jsonl": ('{"question": "2+2?"}\n', "not a call log"),
        "other.jsonl": (header.replace('"key_version": 1', '"key_version": 9') + "\n", "version"),
        "broken.jsonl": (f"{header}\n{first}\n{{not json\n", "line 3: not JSON"),
        "short.jsonl": (f'{header}\n{{"key": "k", "text": "t"}}\n', "line 2: missing provider"),
    }
    for name, (text, reason) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=reason):
            import_calls(store, tmp_path / name)
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ConfigError, match="cannot read"):
        import_calls(store, tmp_path / "bad.gz")
    with pytest.raises(ConfigError, match="no call log"):
        import_calls(store, tmp_path / "missing.jsonl")
    assert len(store) == 3  # nothing half-imported


def test_the_cache_command(tmp_path: Path) -> None:
    runner = CliRunner()
    origin = tmp_path / "origin.sqlite"
    _run(SQLiteCallStore(origin))
    log = tmp_path / "report" / "calls.jsonl.gz"
    result = runner.invoke(app, ["cache", "export", str(log), "--cache", str(origin)])
    assert result.exit_code == 0, result.output
    assert "exported 3 calls" in result.output
    with gzip.open(log, "rt") as lines:
        assert json.loads(next(lines))["format"] == "moa-call-log"

    target = tmp_path / "target.sqlite"
    result = runner.invoke(app, ["cache", "import", str(log), "--cache", str(target)])
    assert result.exit_code == 0 and "imported 3 of 3" in result.output
    result = runner.invoke(app, ["cache", "show", "--cache", str(target)], env={"COLUMNS": "120"})
    assert "3 calls" in result.output and "fake:agg" in result.output

    missing = runner.invoke(app, ["cache", "show", "--cache", str(tmp_path / "none.sqlite")])
    assert missing.exit_code == 2 and "no call cache" in missing.output
    bad = runner.invoke(app, ["cache", "import", str(origin), "--cache", str(target)])
    assert bad.exit_code == 2 and "cannot read the call log" in bad.output


def test_the_cache_its_journal_and_an_exported_log_are_private(tmp_path: Path) -> None:
    previous = os.umask(0o022)  # a usual umask would make them world-readable
    try:
        store = SQLiteCallStore(tmp_path / "deep" / "calls.sqlite")
        _run(store)
        export_calls(store, tmp_path / "calls.jsonl.gz")
    finally:
        os.umask(previous)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"calls.sqlite", "calls.sqlite-wal", "calls.jsonl.gz"}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == dict.fromkeys(
        (p.name for p in files), 0o600
    )


def test_a_recording_holds_exactly_the_calls_a_run_used(tmp_path: Path) -> None:
    store = SQLiteCallStore(tmp_path / "calls.sqlite")
    _run(store)  # three calls of another run, in the same cache
    other = MixtureSpec.model_validate(
        {"layers": [[{"model": "fake:a", "seed": 1}]], "aggregator": {"model": "fake:c"}}
    )
    fake = FakeProvider(replies={"a": "4", "c": "Four."})
    with recording_calls() as recording:
        result = Mixture(other, CachingRegistry(store=store).add("fake", fake)).run("2+2?")
    assert result.output == "Four."
    assert [c.model for c in fake.calls] == ["c"]  # "a" came from the cache
    assert len(recording) == 2  # the answered call and the stored one
    assert write_recording(recording, tmp_path / "run.jsonl.gz") == 2
    elsewhere = SQLiteCallStore(tmp_path / "elsewhere.sqlite")
    import_calls(elsewhere, tmp_path / "run.jsonl.gz")
    replay = CachingRegistry(store=elsewhere, cache_only=True).add("fake", FakeProvider())
    assert Mixture(other, replay).run("2+2?").output == "Four."
    with pytest.raises(CacheMissError):  # the other run's aggregator is not in this log
        Mixture(SPEC, replay).run("2+2?")


def test_calls_outside_a_recording_are_not_noted(tmp_path: Path) -> None:
    store = SQLiteCallStore(tmp_path / "calls.sqlite")
    with recording_calls() as recording:
        pass
    _run(store)
    assert len(recording) == 0
    assert write_recording(recording, tmp_path / "none.jsonl") == 0
    assert read_calls(tmp_path / "none.jsonl") == []


def test_a_recording_is_refused_a_file_that_is_not_a_call_log_before_the_run(
    tmp_path: Path,
) -> None:
    from rich.console import Console

    from moa.cli.common import recorded_calls

    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    ran: list[bool] = []
    with (
        pytest.raises(ConfigError, match="is not a call log"),
        recorded_calls(notes, Console(), no_cache=False),
    ):
        ran.append(True)
    assert ran == [] and notes.read_text() == "my notes\n"


def test_a_log_is_replaced_whole_and_stays_compressed(tmp_path: Path) -> None:
    store = SQLiteCallStore(tmp_path / "calls.sqlite")
    _run(store)
    log = tmp_path / "calls.jsonl.gz"
    assert export_calls(store, log) == 3
    with gzip.open(log, "rt") as lines:
        assert len(lines.read().splitlines()) == 4
    with recording_calls() as recording:
        _run(store)  # the same three calls, from the cache
    assert write_recording(recording, log) == 3
    assert len(read_calls(log)) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partial")]
