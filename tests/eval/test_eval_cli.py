"""``moa eval`` from the command line, over a fake provider kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eval_helpers import FIXTURES, arithmetic
from typer.testing import CliRunner

from moa.cli.main import app
from moa.history import default_history_path
from moa.providers.registry import register_kind
from moa.testing import FunctionProvider

runner = CliRunner()


@pytest.fixture
def provider() -> FunctionProvider:
    fake = FunctionProvider(arithmetic, name="fake")
    register_kind("eval-cli-fake", lambda name, settings, local: fake)
    return fake


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "mix.yaml"
    path.write_text(
        "name: mix\n"
        "providers:\n  fake: {kind: eval-cli-fake}\n"
        'layers:\n  - [{model: "fake:weak"}, {model: "fake:strong"}]\n'
        'aggregator: {model: "fake:agg"}\n'
    )
    return path


def _eval(tmp_path: Path, config: Path, *extra: str) -> tuple[int, str]:
    args = [
        "eval",
        "gsm8k",
        "--data",
        str(FIXTURES / "gsm8k_mini.jsonl"),
        "--system",
        str(config),
        "--out",
        str(tmp_path / "out"),
        "--cache",
        str(tmp_path / "calls.sqlite"),
        *extra,
    ]
    result = runner.invoke(app, args)
    return result.exit_code, result.stderr


def test_eval_runs_reports_and_resumes(
    tmp_path: Path, config: Path, provider: FunctionProvider
) -> None:
    code, err = _eval(tmp_path, config, "--limit", "4")
    assert code == 0, err
    assert "report:" in err and "mix:" in err
    out = tmp_path / "out"
    records = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    # mix + its three models alone + Self-MoA of the best one, on 4 items each.
    assert len(records) == 5 * 4
    assert (out / "report.md").is_file() and (out / "plots" / "scores.png").is_file()
    info = json.loads((out / "run.json").read_text())
    assert info["command"].startswith("moa eval gsm8k")
    calls = len(provider.calls)
    code, err = _eval(tmp_path, config, "--limit", "4")
    assert code == 0 and "resuming: 20 of 20" in err
    assert len(provider.calls) == calls


def test_report_only_rebuilds_from_the_folder(
    tmp_path: Path, config: Path, provider: FunctionProvider
) -> None:
    assert _eval(tmp_path, config, "--limit", "2", "--no-baselines")[0] == 0
    (tmp_path / "out" / "report.md").unlink()
    result = runner.invoke(app, ["eval", "gsm8k", "--report-only", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0
    assert (tmp_path / "out" / "report.md").is_file()


def test_clear_errors(tmp_path: Path, config: Path) -> None:
    result = runner.invoke(app, ["eval", "gsm8k", "--system", str(config)])
    assert result.exit_code == 2 and "--data" in result.stderr
    result = runner.invoke(app, ["eval", "nope", "--data", "x.jsonl"])
    assert result.exit_code == 2 and "unknown task" in result.stderr
    code, err = _eval(tmp_path, config, "--items", "1-x")
    assert code == 2 and "--items" in err


def test_every_option_in_the_docs_exists() -> None:
    import re

    docs = (Path(__file__).resolve().parents[2] / "docs" / "evaluation.md").read_text()
    before, _, judge_section = docs.partition("## Validating the judge")
    judge_section, _, after = judge_section.partition("\n## ")
    help_text = runner.invoke(app, ["eval", "--help"], env={"COLUMNS": "200"}).stdout
    mentioned = set(re.findall(r"`(?:moa eval [^`]*?)?(--[a-z-]+)", before + after))
    assert mentioned, "the docs name the options they explain"
    for option in mentioned:
        assert option in help_text, f"docs/evaluation.md mentions {option}, which moa eval lacks"
    # The judge's section names options of moa judge validate and of moa eval.
    validate = runner.invoke(app, ["judge", "validate", "--help"], env={"COLUMNS": "200"}).stdout
    mentioned = set(re.findall(r"`(--[a-z-]+)", judge_section))
    mentioned |= set(re.findall(r"(?<![\w-])(--[a-z-]+)", judge_section))
    assert {"--weak", "--judge-validation", "--items"} <= mentioned
    for option in mentioned:
        assert option in help_text + validate, f"the judge's section mentions unknown {option}"


def test_humaneval_reads_the_package_data_without_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moa.eval import tasks

    seen: list[str] = []

    def default() -> str:
        seen.append("asked")
        return str(FIXTURES / "humaneval_mini.jsonl")

    humaneval = tasks.TASKS["humaneval"]
    monkeypatch.setitem(
        tasks.TASKS, "humaneval", type(humaneval)(**{**humaneval.__dict__, "default_data": default})
    )
    fake = FunctionProvider(lambda request: "```python\nprint('no')\n```", name="fake")
    register_kind("eval-cli-coder", lambda name, settings, local: fake)
    config = tmp_path / "coder.yaml"
    config.write_text(
        "name: coder\nproviders:\n  fake: {kind: eval-cli-coder}\n"
        'layers: []\naggregator: {model: "fake:coder"}\n'
    )
    args = ["eval", "humaneval", "-s", str(config), "--out", str(tmp_path / "out")]
    result = runner.invoke(app, [*args, "--cache", str(tmp_path / "c.sqlite"), "--no-baselines"])
    assert result.exit_code == 0, result.stderr
    assert seen == ["asked"]
    assert "coder: 0.0" in result.stderr
    assert "pass@1" in (tmp_path / "out" / "report.md").read_text()


def _logged(*args: str) -> list[dict[str, Any]]:
    result = runner.invoke(app, ["logs", "--source", "eval", "--json", *args])
    assert result.exit_code == 0, result.output
    runs: list[dict[str, Any]] = json.loads(result.stdout)
    return runs


def test_log_history_records_every_item_in_the_run_history(
    tmp_path: Path, config: Path, provider: FunctionProvider
) -> None:
    # Off by default: an evaluation leaves the history alone.
    code, err = _eval(tmp_path, config, "--limit", "2", "--no-baselines")
    assert code == 0, err
    assert not default_history_path().exists()

    code, err = _eval(
        tmp_path,
        config,
        "--limit",
        "2",
        "--no-baselines",
        "--log-history",
        "--out",
        str(tmp_path / "x"),
    )
    assert code == 0, err
    runs = _logged()
    assert len(runs) == 2
    assert {r["mixture"] for r in runs} == {"mix"} and {r["source"] for r in runs} == {"eval"}
    records = [
        json.loads(line) for line in (tmp_path / "x" / "items.jsonl").read_text().splitlines()
    ]
    by_id = {r["id"]: r for r in runs}
    for record in records:
        [run_id] = record["history_ids"]
        stored = by_id[run_id]
        assert stored["output"] == record["output"]
        assert stored["question"] == record["prompts"][0]

    shown = runner.invoke(app, ["logs", "show", records[0]["history_ids"][0], "--json"])
    assert shown.exit_code == 0, shown.output
    run = json.loads(shown.stdout)
    assert [c["model"] for c in run["calls"]] == ["fake:weak", "fake:strong", "fake:agg"]
    assert "eval-cli-fake" in run["mixture_yaml"]  # how to reach the models, for a replay

    # --log-content none keeps the numbers, not the text.
    code, err = _eval(
        tmp_path, config, "--limit", "1", "--no-baselines", "--log-history",
        "--log-content", "none", "--out", str(tmp_path / "y"),
    )  # fmt: skip
    assert code == 0, err
    newest = _logged("-n", "1")[0]
    assert newest["content"] == "none" and newest["question"] == "" and newest["output"] is None


def test_item_ids_and_names_with_brackets_are_printed_as_they_are(
    tmp_path: Path, provider: FunctionProvider
) -> None:
    """An id or a name is data, not rich markup: ``[bold]`` stays, ``[/x]`` does not crash."""
    data = tmp_path / "odd.jsonl"
    item = {"id": "[/x] [bold]x", "question": "Tom has 3 apples and 4 more?", "answer": "#### 7"}
    data.write_text(json.dumps(item) + "\n")
    config = tmp_path / "odd.yaml"
    config.write_text(
        'name: "[bold]mix"\nproviders:\n  fake: {kind: eval-cli-fake}\n'
        'aggregator: {model: "fake:strong"}\n'
    )
    args = ["eval", "gsm8k", "--data", str(data), "--system", str(config), "--no-baselines"]
    args += ["--out", str(tmp_path / "out"), "--cache", str(tmp_path / "calls.sqlite")]
    result = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "[1/1] [bold]mix item [/x] [bold]x: score 1" in result.stderr
    assert "items × systems: [bold]mix" in result.stderr
    assert "  [bold]mix: 100.0 [" in result.stderr


def test_cache_only_reruns_a_report_from_the_cache_and_stops_at_a_miss(
    tmp_path: Path, config: Path, provider: FunctionProvider
) -> None:
    assert _eval(tmp_path, config, "--limit", "2", "--no-baselines")[0] == 0
    calls = len(provider.calls)
    replay = tmp_path / "replay"  # a folder of its own, the same cache
    args = ["eval", "gsm8k", "--data", str(FIXTURES / "gsm8k_mini.jsonl"), "--system", str(config)]
    args += ["--out", str(replay), "--cache", str(tmp_path / "calls.sqlite"), "--cache-only"]
    result = runner.invoke(app, [*args, "--limit", "2", "--no-baselines"])
    assert result.exit_code == 0, result.stderr
    assert len(provider.calls) == calls
    assert _scores(replay) == _scores(tmp_path / "out")
    # A third item is in no cache: the replay stops with the model it lacks, logging nothing.
    result = runner.invoke(app, [*args, "--limit", "3", "--no-baselines"])
    assert result.exit_code == 2 and "--cache-only forbids calling any model" in result.stderr
    assert "fake:" in result.stderr and len(provider.calls) == calls
    assert len((replay / "items.jsonl").read_text().splitlines()) == 2


def test_cache_only_with_no_cache_is_refused(tmp_path: Path, config: Path) -> None:
    code, err = _eval(tmp_path, config, "--cache-only", "--no-cache")
    assert code == 2 and "leave out --no-cache" in err


def test_record_calls_writes_the_calls_the_run_used(
    tmp_path: Path, config: Path, provider: FunctionProvider
) -> None:
    log = tmp_path / "run.jsonl.gz"
    record = ("--no-baselines", "--record-calls", str(log))
    code, err = _eval(tmp_path, config, "--limit", "2", *record)
    assert code == 0, err
    assert len(provider.calls) == 6  # 2 items x 3 calls
    assert f"call log {log}: 6 calls used by this run, 6 in all" in err
    # Resumed with one more item: the two done make no call, and the log keeps theirs.
    code, err = _eval(tmp_path, config, "--limit", "3", *record)
    assert code == 0, err
    assert f"call log {log}: 3 calls used by this run, 9 in all" in err
    fresh = tmp_path / "fresh.sqlite"
    assert runner.invoke(app, ["cache", "import", str(log), "--cache", str(fresh)]).exit_code == 0
    args = ["eval", "gsm8k", "--data", str(FIXTURES / "gsm8k_mini.jsonl"), "--system", str(config)]
    args += ["--out", str(tmp_path / "replay"), "--cache", str(fresh), "--cache-only"]
    result = runner.invoke(app, [*args, "--limit", "3", "--no-baselines"])
    assert result.exit_code == 0, result.stderr
    assert _scores(tmp_path / "replay") == _scores(tmp_path / "out")
    # A run stopped by an error still writes what it used until then.
    other = tmp_path / "other.jsonl"
    result = runner.invoke(
        app, [*args, "--limit", "4", "--no-baselines", "--record-calls", str(other)]
    )
    assert result.exit_code == 2 and "--cache-only forbids" in result.stderr
    assert f"call log {other}: 0 calls used by this run, 0 in all" in result.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [(("--no-cache",), "leave out --no-cache"), (("--engine", "ray"), "leave out --engine ray")],
)
def test_record_calls_refuses_what_it_cannot_see(
    tmp_path: Path, config: Path, extra: tuple[str, ...], message: str
) -> None:
    code, err = _eval(tmp_path, config, "--record-calls", str(tmp_path / "l.jsonl"), *extra)
    assert code == 2 and message in " ".join(err.split())  # as rich wrapped it
    assert not (tmp_path / "l.jsonl").exists()


def _scores(out: Path) -> list[object]:
    return [json.loads(line)["score"] for line in (out / "items.jsonl").read_text().splitlines()]


def test_eval_names_every_model_to_pull_before_its_first_call(
    tmp_path: Path, config: Path, provider: FunctionProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("MOA_MODEL_DIR", str(models))
    code, err = _eval(
        tmp_path,
        config,
        "--system",
        "local:qwen2.5-coder-0.5b",
        "--system",
        "local:smollm2-135m",
        "--no-baselines",
    )
    assert code == 2
    assert "moa models pull qwen2.5-coder-0.5b smollm2-135m" in " ".join(err.split())
    assert provider.calls == []  # the configured mixture, listed first, made no call either


def test_plain_progress_marks_replayed_items_and_paces_the_eta_by_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    from rich.console import Console

    from moa.cli import eta
    from moa.cli import eval as eval_cli

    clock = iter([0.0, 0.01, 0.02, 60.02, 180.02])  # two items from the cache, 60 s, 120 s
    monkeypatch.setattr(eta.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    progress = eval_cli._ProgressObserver(Console(file=out, width=200))
    progress.start(10, 0)
    for item, source in enumerate(["replayed", "replayed", "measured", "rebuilt"]):
        progress.finished(
            {
                "system": "s",
                "item_id": item,
                "score": 1.0,
                "latency_s": 30,
                "latency_source": source,
            }
        )
    progress.stop()
    lines = [line for line in out.getvalue().splitlines() if line.startswith("[")]
    assert lines[0] == "[1/10] s item 0: score 1, 30.0s replayed; ETA ?"
    assert lines[1].endswith("30.0s replayed; ETA ?")
    assert lines[2].endswith("item 2: score 1, 30.0s; ETA 7 min")  # 60 s an item, 7 left
    # The first 60 s also held the start: from the second item on, it is left out.
    assert lines[3].endswith("ETA 12 min")  # 120 s an item, 6 left
