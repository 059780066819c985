"""A judged run's report says whether its judge was validated, and how to validate it."""

from __future__ import annotations

import json
from pathlib import Path

from eval_helpers import FIXTURES, first, longer, weak
from eval_helpers import JUDGE_DATA as DATA
from typer.testing import CliRunner

from moa.cli.main import app
from moa.eval import EvalOptions, EvalRun
from moa.eval.judge_check import JudgeCheck, JudgeCheckOptions
from moa.eval.report import write_report
from moa.providers.cache import CachingRegistry, SQLiteCallStore
from moa.testing import FunctionProvider
from moa.types import CompletionRequest


def _judge(request: CompletionRequest) -> str:
    """Pairwise: the longer response; graded: a fixed rating."""
    prompt = request.messages[-1].content
    return longer(request) if "[Response A]" in prompt else "Rating: [[7]]"


def _registry(tmp_path: Path, judge: object = _judge) -> CachingRegistry:
    def system(request: CompletionRequest) -> str:
        return "A long, careful and complete answer." if request.model == "good" else "meh"

    registry = CachingRegistry(store=SQLiteCallStore(tmp_path / "calls.sqlite"))
    registry.add("sys", FunctionProvider(system, name="sys"))
    registry.add("judge", FunctionProvider(judge, name="judge"))  # type: ignore[arg-type]
    registry.add("w", FunctionProvider(weak, name="w"))
    return registry


def _validate(
    tmp_path: Path, judge: str = "judge:j", function: object = _judge, stop_early: bool = False
) -> Path:
    out = tmp_path / "validation"
    options = JudgeCheckOptions(
        judge=judge, data=DATA, out=out, items=10, weak="w:weak", stop_early=stop_early
    )
    JudgeCheck(options, registry=_registry(tmp_path, function)).run()
    return out / "judge-validation.json"


def _alpaca(tmp_path: Path, validation: Path | None = None, **extra: object) -> str:
    out = tmp_path / "run"
    options = EvalOptions(
        "alpaca_eval",
        str(FIXTURES / "alpaca_instructions.json"),
        out,
        systems=["sys:good"],
        reference=str(FIXTURES / "alpaca_reference.json"),
        judge="judge:j",
        judge_validation=None if validation is None else str(validation),
        **extra,  # type: ignore[arg-type]
    )
    EvalRun(options, registry=_registry(tmp_path)).run()
    write_report(out)
    return (out / "report.md").read_text()


def _results(report: str) -> str:
    return report.split("## Results")[1]


def test_without_a_validation_the_numbers_are_labelled(tmp_path: Path) -> None:
    report = _alpaca(tmp_path)
    head = report.split("## Results")[0]
    assert "judge not validated" in head and "no --judge-validation" in head
    assert "not to" in head or "do not trust" in head
    assert "`moa judge validate --judge judge:j --data" in head
    assert "--report-only --judge-validation" in head
    assert "## Results (judge not validated)" in report
    assert "sys:good" in _results(report)  # the numbers are still there
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["judge_validation"]["validated"] is False
    assert summary["judge_validation"]["commands"][0].startswith("moa judge validate")


def test_a_matching_passing_validation_labels_the_judge_validated(tmp_path: Path) -> None:
    validation = _validate(tmp_path)
    report = _alpaca(tmp_path, validation)
    head = report.split("## Results")[0]
    assert "judge validated:** `judge:j`" in head and "judge not validated" not in report
    assert "100.0% [72.2, 100.0] (weak answer first)" in head
    assert "Together-MoA 70.0%" in head and "position consistency 100.0%" in head
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["judge_validation"]["validated"] is True
    assert summary["judge_validation"]["file"] == str(validation.resolve())
    assert "## Results\n" in report


def test_a_validation_of_another_judge_does_not_count(tmp_path: Path) -> None:
    validation = _validate(tmp_path, judge="judge:other")
    report = _alpaca(tmp_path, validation)
    assert "judge not validated" in report and "judge validated:" not in report
    assert "validates the judge `judge:other`" in report and "this run's judge is" in report


def test_a_changed_judge_prompt_makes_another_judge(tmp_path: Path) -> None:
    validation = _validate(tmp_path)
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    shipped = (Path(__file__).parents[2] / "src/moa/prompts/judge_pairwise.txt").read_text()
    (prompts / "judge_pairwise.txt").write_text("Be fair.\n" + shipped)
    report = _alpaca(tmp_path, validation, prompts_dir=prompts)
    assert "judge not validated" in report and "judge prompt" in report
    assert f"--prompts {prompts}" in report  # the command validates the judge as it runs here


def test_a_failed_validation_does_not_count(tmp_path: Path) -> None:
    validation = _validate(tmp_path, function=first)
    report = _alpaca(tmp_path, validation)
    assert "judge not validated" in report and "failed (weak_loses, known_order" in report


def test_a_validation_stopped_early_says_the_known_order_was_not_run(tmp_path: Path) -> None:
    report = _alpaca(tmp_path, _validate(tmp_path, function=first, stop_early=True))
    assert "failed (weak_loses: " in report
    assert "known order not run (stopped after 2 instructions)" in report
    assert "Together-MoA –" not in report


def test_mt_bench_is_labelled_too(tmp_path: Path) -> None:
    validation = _validate(tmp_path)
    out = tmp_path / "mt"
    options = EvalOptions(
        "mt_bench", str(FIXTURES / "mt_bench"), out, systems=["sys:good"], judge="judge:j"
    )
    EvalRun(options, registry=_registry(tmp_path)).run()
    write_report(out)
    assert "judge not validated" in (out / "report.md").read_text()
    write_report(out, validation)  # as moa eval --report-only --judge-validation does
    report = (out / "report.md").read_text()
    assert "judge validated:" in report and "1-10 grading uses other prompts" in report
    info = json.loads((out / "run.json").read_text())
    assert info["judge_validation"] == str(validation.resolve())


def test_exact_tasks_have_no_judge_line(tmp_path: Path) -> None:
    from eval_helpers import arithmetic

    registry = CachingRegistry(store=SQLiteCallStore(tmp_path / "c.sqlite"))
    registry.add("fake", FunctionProvider(arithmetic, name="fake"))
    out = tmp_path / "g"
    options = EvalOptions("gsm8k", str(FIXTURES / "gsm8k_mini.jsonl"), out, ["fake:strong"])
    EvalRun(options, registry=registry).run()
    write_report(out)
    assert "validated" not in (out / "report.md").read_text()
    assert "judge_validation" not in json.loads((out / "summary.json").read_text())


def test_report_only_takes_a_validation(tmp_path: Path) -> None:
    validation = _validate(tmp_path)
    _alpaca(tmp_path)
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "alpaca_eval",
            "--out",
            str(tmp_path / "run"),
            "--report-only",
            "--judge-validation",
            str(validation),
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert "judge validated:" in result.stderr
    assert "judge validated:" in (tmp_path / "run" / "report.md").read_text()


def test_moa_eval_warns_before_the_run_and_labels_the_report(tmp_path: Path) -> None:
    from moa.providers.registry import register_kind

    def both(request: CompletionRequest) -> str:
        return _judge(request) if request.model == "judge" else "an answer of some length"

    register_kind("judge-status-fake", lambda name, settings, local: FunctionProvider(both))
    judge = tmp_path / "judge.yaml"
    judge.write_text(
        "name: j\nproviders:\n  fake: {kind: judge-status-fake}\n"
        'aggregator: {model: "fake:judge", temperature: 0}\n'
    )
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "moa-judge-validation/1", "judge": {"key": "x"}}))
    args = ["eval", "alpaca_eval", "--data", str(FIXTURES / "alpaca_instructions.json")]
    args += ["--reference", str(FIXTURES / "alpaca_reference.json"), "--system", "fake:good"]
    args += ["--judge", str(judge), "--judge-validation", str(other)]
    args += ["--out", str(tmp_path / "run"), "--cache", str(tmp_path / "c.sqlite")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.index("judge not validated") < result.stderr.index("report:")
    assert "validates the judge `None` (key x)" in result.stderr
    assert "judge not validated" in (tmp_path / "run" / "report.md").read_text()
