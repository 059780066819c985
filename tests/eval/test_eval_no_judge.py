"""``--no-judge``: a judged task answered by every system, compared on what it cost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_helpers import FIXTURES
from typer.testing import CliRunner

from moa.cli.main import app
from moa.errors import ConfigError
from moa.eval import EvalOptions, EvalRun
from moa.eval.report import write_report
from moa.providers.cache import CachingRegistry, SQLiteCallStore
from moa.providers.registry import register_kind
from moa.testing import FunctionProvider
from moa.types import CompletionRequest

GOOD = "A long, careful and complete answer."


class Calls:
    """The fake systems and judge, counting what each was asked."""

    def __init__(self) -> None:
        self.system = 0
        self.judge = 0

    def answer(self, request: CompletionRequest) -> str:
        self.system += 1
        return GOOD if request.model == "good" else "meh"

    def verdict(self, request: CompletionRequest) -> str:
        self.judge += 1
        return "[[A]]" if "[Response A]" in request.messages[-1].content else "Rating: [[8]]"

    def registry(self, tmp_path: Path) -> CachingRegistry:
        registry = CachingRegistry(store=SQLiteCallStore(tmp_path / "calls.sqlite"))
        registry.add("sys", FunctionProvider(self.answer, name="sys"))
        registry.add("judge", FunctionProvider(self.verdict, name="judge"))
        return registry


def _alpaca(out: Path, **extra: object) -> EvalOptions:
    return EvalOptions(
        "alpaca_eval",
        str(FIXTURES / "alpaca_instructions.json"),
        out,
        systems=["sys:good", "sys:bad"],
        reference=str(FIXTURES / "alpaca_reference.json"),
        **extra,  # type: ignore[arg-type]
    )


def test_alpaca_eval_without_a_judge_compares_costs_and_exports_the_answers(
    tmp_path: Path,
) -> None:
    calls = Calls()
    out = tmp_path / "run"
    EvalRun(_alpaca(out, no_judge=True), registry=calls.registry(tmp_path)).run()
    assert (calls.system, calls.judge) == (6, 0)
    info = json.loads((out / "run.json").read_text())
    assert info["unjudged"] is True and info["judge"] is None
    assert [s["name"] for s in info["systems"]] == ["sys:good", "sys:bad"]  # no Self-MoA
    summary = write_report(out)
    by_name = {s.name: s for s in summary.systems}
    assert summary.common_items == 3 and summary.best_single is None and summary.pairs == []
    assert by_name["sys:good"].score is None and by_name["sys:good"].win_rate is None
    assert by_name["sys:good"].calls == 1.0
    assert by_name["sys:good"].output_chars == len(GOOD)
    assert by_name["sys:bad"].output_chars == 3
    assert summary.judge is not None and not summary.judge.judged
    report = (out / "report.md").read_text()
    assert "## Results (not judged)" in report and "**not judged:**" in report
    results = report.split("## Results")[1].split("## ")[0]
    assert "win rate" not in results and "Δ vs best" not in results
    assert "| answer chars/item |" in results and f"| {len(GOOD)} |" in results
    assert "do not trust" not in report  # nothing was judged, so nothing is to be distrusted
    assert [p.name for p in (out / "plots").iterdir()] == ["tokens_latency.png"]
    exported = json.loads((out / "model_outputs" / "sys_good" / "model_outputs.json").read_text())
    assert [e["output"] for e in exported] == [GOOD] * 3


def test_a_judge_given_later_reuses_the_answers(tmp_path: Path) -> None:
    calls = Calls()
    registry = calls.registry(tmp_path)
    out = tmp_path / "run"
    EvalRun(_alpaca(out, no_judge=True), registry=registry).run()
    EvalRun(_alpaca(out, judge="judge:j", baselines=False), registry=registry).run()
    assert calls.system == 6  # the answers came from the call cache
    assert calls.judge == 12  # both orders, 3 items, 2 systems
    summary = write_report(out)
    good = next(s for s in summary.systems if s.name == "sys:good")
    assert good.win_rate is not None and good.score is not None and good.unjudged == 0
    assert "not judged" not in (out / "report.md").read_text()


def test_mt_bench_without_a_judge_answers_both_turns(tmp_path: Path) -> None:
    calls = Calls()
    out = tmp_path / "run"
    options = EvalOptions(
        "mt_bench", str(FIXTURES / "mt_bench"), out, systems=["sys:good"], no_judge=True
    )
    EvalRun(options, registry=calls.registry(tmp_path)).run()
    records = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert calls.judge == 0
    assert all(len(r["outputs"]) == 2 and r["score"] is None for r in records)
    summary = write_report(out)
    assert summary.systems[0].score is None and summary.systems[0].calls == 2.0
    assert summary.systems[0].unjudged == len(records)


@pytest.mark.parametrize(
    ("task", "extra", "message"),
    [
        ("alpaca_eval", {"no_judge": True, "judge": "judge:j"}, "drop --judge"),
        ("alpaca_eval", {"no_judge": True, "judge_validation": "v.json"}, "drop --judge"),
        ("alpaca_eval", {}, "or --no-judge"),
        ("gsm8k", {"no_judge": True}, "scored without a judge"),
    ],
)
def test_contradictions_are_refused(
    tmp_path: Path, task: str, extra: dict[str, object], message: str
) -> None:
    options = _alpaca(tmp_path / "run", **extra)
    if task == "gsm8k":
        options = EvalOptions(
            "gsm8k",
            str(FIXTURES / "gsm8k_mini.jsonl"),
            tmp_path / "run",
            systems=["sys:good"],
            no_judge=True,
        )
    with pytest.raises(ConfigError, match=message):
        EvalRun(options, registry=Calls().registry(tmp_path))


def test_moa_eval_no_judge_from_the_command_line(tmp_path: Path) -> None:
    calls = Calls()
    register_kind("no-judge-fake", lambda name, settings, local: FunctionProvider(calls.answer))
    config = tmp_path / "good.yaml"
    config.write_text(
        "name: good\nproviders:\n  fake: {kind: no-judge-fake}\n"
        'aggregator: {model: "fake:good", temperature: 0}\n'
    )
    args = ["eval", "alpaca_eval", "--data", str(FIXTURES / "alpaca_instructions.json")]
    args += ["--reference", str(FIXTURES / "alpaca_reference.json"), "--system", str(config)]
    args += ["--no-judge", "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "c.sqlite")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert "not judged: this run was answered with --no-judge" in result.stderr
    assert "judge not validated" not in result.stderr
    assert calls.system == 3 and calls.judge == 0
    assert "## Results (not judged)" in (tmp_path / "run" / "report.md").read_text()


def test_an_unfinished_run_without_a_judge_compares_the_items_all_finished(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    EvalRun(_alpaca(out, no_judge=True), registry=Calls().registry(tmp_path)).run()
    log = out / "items.jsonl"
    lines = log.read_text().splitlines()
    dropped = next(i for i, line in enumerate(lines) if json.loads(line)["system"] == "sys:bad")
    log.write_text("\n".join(lines[:dropped] + lines[dropped + 1 :]) + "\n")
    summary = write_report(out)
    assert summary.common_items == 2 and all(s.n == 2 for s in summary.systems)
    report = (out / "report.md").read_text()
    assert "on the 2 items all of them finished." in report
    assert "each system scored" not in report
