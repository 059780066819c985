from __future__ import annotations

import io
import json
import shlex
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from moa.cli.main import app
from moa.config import load_config
from moa.errors import ProviderError
from moa.providers.registry import register_kind
from moa.testing import FunctionProvider
from moa.types import CompletionRequest

runner = CliRunner()


def test_select_writes_a_runnable_config_and_a_report(
    gsm8k: Path, provider: FunctionProvider, tmp_path: Path
) -> None:
    register_kind("select-test", lambda name, settings, local: provider)
    base = tmp_path / "pool.yaml"
    base.write_text("providers:\n  sel: {kind: select-test}\naggregator: {model: 'sel:strong'}\n")
    out = tmp_path / "out"
    args = ["select", "-m", "sel:strong", "-m", "sel:weak", "--task", "gsm8k"]
    args += ["--data", str(gsm8k), "--config", str(base), "--dev", "12", "--heldout", "16"]
    args += ["--cache", str(tmp_path / "c.sqlite"), "--out", str(out), "--samples", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    config = load_config(out / "select.yaml")
    assert "sel" in config.providers
    assert "## Held-out results (16 items)" in (out / "report.md").read_text()
    assert (out / "select.json").is_file()
    assert "select.yaml" in result.stderr
    # Off a terminal, one line per answered item, with the configuration's ETA.
    assert "[1/12] single strong item" in result.stderr
    assert "[16/16] single strong item" in result.stderr
    # The report names the command given, whatever ran it (here CliRunner, not sys.argv).
    given = ["moa", "select", "--model", "sel:strong", "--model", "sel:weak", "--task", "gsm8k"]
    given += ["--data", str(gsm8k), "--out", str(out), "--config", str(base), "--dev", "12"]
    given += ["--heldout", "16", "--samples", "3", "--cache", str(tmp_path / "c.sqlite")]
    assert f"```\n{shlex.join(given)}\n```" in (out / "report.md").read_text()
    # The same selection replayed from the cache alone: no call, the same choice.
    calls = len(provider.calls)
    replay = tmp_path / "replay"
    args[args.index(str(out))] = str(replay)
    log = tmp_path / "select.jsonl"
    result = runner.invoke(app, [*args, "--cache-only", "--record-calls", str(log)])
    assert result.exit_code == 0, result.output
    assert len(provider.calls) == calls
    chosen = [json.loads((o / "select.json").read_text())["recommended"] for o in (out, replay)]
    assert chosen[0] == chosen[1]
    # What the replay used is a call log that replays the selection in a cache of its own.
    total = len(log.read_text().splitlines()) - 1
    assert f"{total} calls used by this run, {total} in all" in result.stderr
    fresh = tmp_path / "fresh.sqlite"
    assert runner.invoke(app, ["cache", "import", str(log), "--cache", str(fresh)]).exit_code == 0
    args[args.index(str(tmp_path / "c.sqlite"))] = str(fresh)
    args[args.index(str(replay))] = str(tmp_path / "fresh-out")
    result = runner.invoke(app, [*args, "--cache-only"])
    assert result.exit_code == 0, result.output
    assert (
        json.loads((tmp_path / "fresh-out" / "select.json").read_text())["recommended"]
        == (chosen[0])
    )


def test_select_warns_when_items_failed(gsm8k: Path, tmp_path: Path) -> None:
    def weak_is_down(request: CompletionRequest) -> str:
        if request.model == "weak":
            raise ProviderError("the server went away", provider="sel", model="weak")
        return "The answer is 1"

    register_kind("select-down", lambda name, settings, local: FunctionProvider(weak_is_down))
    base = tmp_path / "pool.yaml"
    base.write_text("providers:\n  sel: {kind: select-down}\naggregator: {model: 'sel:strong'}\n")
    out = tmp_path / "out"
    args = ["select", "-m", "sel:strong", "-m", "sel:weak", "--task", "gsm8k", "--no-cache"]
    args += ["--data", str(gsm8k), "--config", str(base), "--dev", "12", "--heldout", "16"]
    result = runner.invoke(app, [*args, "--max-evals", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert "warning: 28 items failed and were scored as wrong" in said  # weak: dev and held-out
    assert "28 items failed" in (out / "report.md").read_text()


def test_select_reports_bad_input_in_one_line(gsm8k: Path, tmp_path: Path) -> None:
    args = ["select", "-m", "fake:a", "--task", "gsm8k", "--data", str(gsm8k)]
    result = runner.invoke(app, [*args, "--dev", "40", "--heldout", "40", "--no-cache"])
    assert result.exit_code == 2
    assert "fewer than --dev" in result.stderr


def test_select_names_every_model_to_pull_before_it_starts(
    gsm8k: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOA_MODEL_DIR", str(tmp_path))
    args = ["select", "-m", "local:smollm2-135m", "-m", "local:qwen2.5-coder-0.5b"]
    args += ["--task", "gsm8k", "--data", str(gsm8k), "--dev", "12", "--heldout", "16"]
    result = runner.invoke(app, [*args, "--no-cache", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "moa models pull smollm2-135m qwen2.5-coder-0.5b" in " ".join(result.stderr.split())
    assert not (tmp_path / "out").exists()


def test_select_limit_reaches_the_splits(gsm8k: Path, tmp_path: Path) -> None:
    args = ["select", "-m", "fake:a", "--task", "gsm8k", "--data", str(gsm8k), "--no-cache"]
    for limit in ("20", "gsm8k=20"):
        result = runner.invoke(app, [*args, "--limit", limit, "--dev", "12", "--heldout", "16"])
        assert result.exit_code == 2
        assert "the first 20 of" in result.stderr


def test_plain_progress_paces_the_eta_by_items_that_took_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from moa.cli import eta
    from moa.cli import select as select_cli
    from moa.select.evaluate import Outcome

    clock = iter([0.0, 0.01, 0.02, 60.02, 180.02])  # two cached items, then 60 s and 120 s
    monkeypatch.setattr(eta.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    progress = select_cli._ItemProgress(Console(file=out, width=200))
    for done in range(1, 5):
        progress("single m", done, 10, Outcome(str(done), 1.0, "4"))
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("ETA ?") and lines[1].endswith("ETA ?")
    assert lines[2].endswith("ETA 7 min")  # 60 s an item, 7 items left
    # The first 60 s also held the start: from the second item on, it is left out.
    assert lines[3].endswith("ETA 12 min")  # 120 s an item, 6 left


def test_select_over_two_tasks_writes_a_per_task_report(
    gsm8k: Path, mmlu: Path, provider: FunctionProvider, tmp_path: Path
) -> None:
    register_kind("select-multi-test", lambda name, settings, local: provider)
    base = tmp_path / "pool.yaml"
    base.write_text(
        "providers:\n  sel: {kind: select-multi-test}\naggregator: {model: 'sel:strong'}\n"
    )
    out = tmp_path / "out"
    args = ["select", "-m", "sel:strong", "-m", "sel:weak", "--config", str(base)]
    args += ["--task", "gsm8k", "--data", str(gsm8k), "-t", "mmlu", "-d", str(mmlu)]
    args += ["--dev", "12", "--heldout", "16", "--samples", "3", "--floor", "mmlu=5"]
    args += ["--cache", str(tmp_path / "c.sqlite"), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "sel" in load_config(out / "select.yaml").providers
    report = (out / "report.md").read_text()
    assert "# Agent selection on gsm8k, mmlu" in report and "## Per task: " in report
    assert "floors (points): gsm8k 2, mmlu 5" in report
    data = json.loads((out / "select.json").read_text())
    assert [row["task"] for row in data["per_task"]] == ["gsm8k", "mmlu"]
    assert [row["floor"] for row in data["per_task"]] == [2.0, 5.0]
    assert "moa select --model sel:strong --model sel:weak --task gsm8k --task mmlu" in report
    # Each task's items are told apart in the progress lines.
    assert "[16/16] mmlu: single strong item" in result.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-t", "mmlu"], "--data: give one per --task, in the same order (2 --task, 1 --data)"),
        (["-d", "more.jsonl"], "--data: give one per --task, in the same order (1 --task, 2"),
        (["--floor", "3"], "--floor applies to several tasks"),
        (["-t", "gsm8k", "-d", "x"], "--task gsm8k is given twice"),
        (["--limit", "mmlu=20"], "--limit mmlu=20: mmlu is not a --task (gsm8k)"),
        (["--limit", "0"], "--limit 0: give a whole number of items of 1 or more"),
    ],
)
def test_select_names_the_option_that_does_not_match(
    gsm8k: Path, extra: list[str], message: str
) -> None:
    args = ["select", "-m", "fake:a", "--task", "gsm8k", "--data", str(gsm8k), "--no-cache"]
    result = runner.invoke(app, [*args, *extra])
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())


def test_select_help_tells_how_to_give_several_tasks() -> None:
    result = runner.invoke(app, ["select", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "Repeat it to choose one configuration for several tasks" in text
    assert "TASK=N for one" in text
