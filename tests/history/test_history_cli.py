"""moa run records its runs; moa logs lists, searches, shows, exports and replays them."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from typer.testing import CliRunner

from moa.cli.main import app
from moa.history import HistoryStore, default_history_path
from moa.testing import FakeProvider

runner = CliRunner()


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _runs() -> list[dict[str, object]]:
    return json.loads(_run("logs", "--json"))  # type: ignore[no-any-return]


def test_a_run_is_recorded_with_every_call(config: Path, fake: FakeProvider) -> None:
    _run("run", "What is the capital of France?", "--config", str(config))
    [run] = _runs()
    assert run["mixture"] == "geo"
    assert run["question"] == "What is the capital of France?"
    assert run["output"] == "Paris."
    assert run["failures"] == 1
    assert run["source"] == "cli"
    assert sorted(run["models"]) == ["hist:alpha", "hist:beta", "hist:broken", "hist:judge"]  # type: ignore[arg-type]

    full = json.loads(_run("logs", "show", str(run["id"])[:8], "--json"))
    calls = {c["model"]: c for c in full["calls"]}
    assert [c["kind"] for c in full["calls"]] == ["layer", "layer", "layer", "aggregator"]
    assert calls["hist:broken"]["ok"] is False
    assert calls["hist:broken"]["attempts"] == 2
    assert "upstream broke" in calls["hist:broken"]["error"]
    judge = calls["hist:judge"]
    assert judge["params"] == {"temperature": 0.2, "max_tokens": 64}
    # The aggregator saw the proposers' answers: the messages it was sent are kept.
    seen = " ".join(m["content"] for m in judge["messages"])
    assert "Paris is the capital of France." in seen and "The capital is Paris." in seen
    assert full["conversation"] == [{"role": "user", "content": "What is the capital of France?"}]
    assert "hist:alpha" in full["mixture_yaml"]
    assert len(full["mixture_hash"]) == 12
    assert full["trace_id"] and len(full["trace_id"]) == 32


def test_history_file_is_private() -> None:
    path = default_history_path()
    HistoryStore(path).close()
    assert str(path).startswith(os.environ["MOA_HOME"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store = HistoryStore(path)
    mode = store._conn.execute("PRAGMA journal_mode").fetchone()[0]
    store.close()
    assert mode == "wal"


def test_no_log_and_config_switch_keep_nothing(config: Path, tmp_path: Path) -> None:
    _run("run", "not kept", "--config", str(config), "--no-log")
    off = tmp_path / "off.yaml"
    off.write_text(config.read_text() + "history: false\n")
    _run("run", "not kept either", "--config", str(off))
    _run("run", "kept", "--config", str(config))
    assert [r["question"] for r in _runs()] == ["kept"]


def test_log_content_none_keeps_no_text(config: Path) -> None:
    _run("run", "a secret question", "--config", str(config), "--log-content", "none")
    [run] = _runs()
    assert run["question"] == "" and run["output"] is None
    full = json.loads(_run("logs", "show", str(run["id"]), "--json"))
    assert full["conversation"] == []
    assert all(c["messages"] == [] and c["output"] is None for c in full["calls"])
    assert full["completion_tokens"] > 0
    folder = default_history_path().parent
    raw = b"".join(f.read_bytes() for f in folder.iterdir() if f.name.startswith("history"))
    assert b"secret" not in raw and b"Paris" not in raw


def test_search_filters_and_show_like_show_layers(
    config: Path, other_config: Path, fake: FakeProvider
) -> None:
    _run("run", "What is the capital of France?", "--config", str(config))
    fake.script("beta", "Rome is the capital of Italy.")
    _run("run", "And of Italy?", "--config", str(other_config))
    assert [r["question"] for r in _runs()] == ["And of Italy?", "What is the capital of France?"]
    found = json.loads(_run("logs", "-q", "Rome", "--json"))
    assert [r["mixture"] for r in found] == ["solo"]
    found = json.loads(_run("logs", "-q", "capital France", "--json"))
    assert [r["mixture"] for r in found] == ["geo"]
    assert [r["mixture"] for r in json.loads(_run("logs", "--mixture", "solo", "--json"))] == [
        "solo"
    ]
    assert [r["mixture"] for r in json.loads(_run("logs", "--model", "alpha", "--json"))] == ["geo"]
    assert [r["mixture"] for r in json.loads(_run("logs", "--failed", "--json"))] == ["geo"]
    assert json.loads(_run("logs", "--since", "1h", "--json"))
    assert json.loads(_run("logs", "--until", "2000-01-01", "--json")) == []
    table = runner.invoke(app, ["logs"], env={"COLUMNS": "200"}).output
    assert "And of Italy?" in table and "geo" in table

    geo = json.loads(_run("logs", "--mixture", "geo", "--json"))[0]
    shown = runner.invoke(app, ["logs", "show", geo["id"]], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    out = shown.output
    for text in ("layer 1: 3 agent(s)", "Paris is the capital of France.", "FAILED", "answer"):
        assert text in out
    assert out.rstrip().endswith("s") or "Paris." in out


def test_bad_search_and_unknown_id_are_clear_errors(config: Path) -> None:
    _run("run", "q", "--config", str(config))
    bad = runner.invoke(app, ["logs", "-q", '"unclosed'])
    assert bad.exit_code == 2 and "full-text syntax" in bad.output
    missing = runner.invoke(app, ["logs", "show", "ffffffffff"])
    assert missing.exit_code == 2 and "no run" in missing.output


def test_export_jsonl(config: Path, tmp_path: Path) -> None:
    _run("run", "one", "--config", str(config))
    _run("run", "two", "--config", str(config))
    target = tmp_path / "runs.jsonl"
    _run("logs", "export", "-o", str(target))
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["question"] for r in lines] == ["two", "one"]
    assert all(len(r["calls"]) == 4 for r in lines)
    assert _run("logs", "export", "-q", "two").count("\n") == 1


def test_replay_with_another_mixture_side_by_side(
    config: Path, other_config: Path, fake: FakeProvider
) -> None:
    _run("run", "What is the capital of France?", "--config", str(config))
    [old] = _runs()
    fake.script("beta", "It is Paris, on the Seine.")
    out = _run("logs", "replay", str(old["id"])[:10], "--config", str(other_config))
    assert "Paris." in out and "It is Paris, on the Seine." in out
    assert "before: geo" in out and "now: solo" in out
    new, _ = _runs()
    assert new["source"] == "replay" and new["replay_of"] == old["id"]
    assert new["question"] == "What is the capital of France?"
    # Same mixture again, from what the history stored of it.
    _run("logs", "replay", str(old["id"]))
    again = _runs()[0]
    assert again["mixture"] == "geo" and again["mixture_hash"] == old["mixture_hash"]
    assert json.loads(_run("logs", "--source", "replay", "-q", "Seine", "--json"))


def test_prune(config: Path) -> None:
    _run("run", "old", "--config", str(config))
    assert "0 run(s) removed" in _run("logs", "prune", "--older-than", "1")
    assert "1 run(s) removed" in _run("logs", "prune", "--older-than", "0")
    assert _runs() == []


def test_no_history_yet_says_how_runs_get_there() -> None:
    result = runner.invoke(app, ["logs"])
    assert result.exit_code == 2 and "no run history" in result.output


def test_chat_turns_are_recorded_with_the_conversation_so_far(config: Path) -> None:
    result = runner.invoke(
        app, ["chat", "--config", str(config)], input="First question?\nSecond question?\n"
    )
    assert result.exit_code == 0, result.output
    second, first = _runs()
    assert first["source"] == second["source"] == "chat"
    full = json.loads(_run("logs", "show", str(second["id"]), "--json"))
    assert [m["content"] for m in full["conversation"]] == [
        "First question?",
        "Paris.",
        "Second question?",
    ]


def test_a_question_and_a_name_with_brackets_are_listed_and_shown_as_they_are(
    config: Path, tmp_path: Path
) -> None:
    odd = tmp_path / "odd.yaml"
    odd.write_text(config.read_text().replace("name: geo", 'name: "[/m] [bold]geo"'))
    _run("run", "[/x] [bold]x", "--config", str(odd))
    listed = runner.invoke(app, ["logs"], env={"COLUMNS": "300"})
    assert listed.exit_code == 0, listed.output
    assert "[/m] [bold]geo" in listed.stdout and "[/x] [bold]x" in listed.stdout
    [run] = _runs()
    shown = runner.invoke(app, ["logs", "show", str(run["id"])], env={"COLUMNS": "300"})
    assert shown.exit_code == 0, shown.output
    assert "mixture [/m] [bold]geo" in shown.stderr
