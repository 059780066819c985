"""``moa judge validate``: scripted judges pass, fail, and resume from the call cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from eval_helpers import JUDGE_DATA as DATA
from eval_helpers import fake_judge_config, first, longer, weak
from typer.testing import CliRunner

from moa.cli.main import app
from moa.eval.judge_check import DEFAULT_WEAK, JudgeCheck, JudgeCheckOptions
from moa.eval.judge_criteria import EarlyStop, assess, early_stop
from moa.providers.cache import CachingRegistry, SQLiteCallStore
from moa.providers.cache_file import read_calls
from moa.testing import FunctionProvider
from moa.types import CompletionRequest


def _check(
    tmp_path: Path,
    judge: object,
    data: Path = DATA,
    items: int = 10,
    stop_early: bool = False,
    concurrency: int = 1,
) -> tuple[JudgeCheck, FunctionProvider, FunctionProvider]:
    judge_provider = FunctionProvider(judge, name="j")  # type: ignore[arg-type]
    weak_provider = FunctionProvider(weak, name="w")
    registry = CachingRegistry(store=SQLiteCallStore(tmp_path / "calls.sqlite"))
    registry.add("j", judge_provider).add("w", weak_provider)
    options = JudgeCheckOptions(
        judge="j:judge",
        data=data,
        out=tmp_path / "out",
        items=items,
        weak="w:weak",
        stop_early=stop_early,
        concurrency=concurrency,
    )
    return JudgeCheck(options, registry=registry), judge_provider, weak_provider


def test_a_judge_preferring_the_reference_is_validated(tmp_path: Path) -> None:
    check, judge, weak_model = _check(tmp_path, longer)
    document = check.run()
    criteria = document["criteria"]
    loses, order = criteria["weak_loses"], criteria["known_order"]
    assert loses["passed"] and loses["weak_first"]["mean"] == 100.0
    assert loses["reference_first"]["mean"] == 100.0 and loses["weak_first"]["n"] == 10
    assert loses["weak_first"]["low"] < 100.0  # a Wilson interval, not a point
    assert order["passed"]
    assert order["Together-MoA"]["mean"] == pytest.approx(70.0)
    assert order["Together-MoA-Lite"]["mean"] == pytest.approx(60.0)
    assert order["cis_separate"] is False  # 10 items cannot separate 70% from 60%
    assert criteria["position_consistency"]["rate"]["mean"] == 100.0
    assert document["validated"] is True
    # 10 weak answers; 3 × 10 pairs judged in both orders, less the 9 pairs where MoA and
    # MoA-Lite wrote the same text: the cache answers those the second time.
    assert len(weak_model.calls) == 10 and len(judge.calls) == 60 - 2 * 9
    assert weak_model.calls[0].params.max_tokens == 512
    assert weak_model.calls[0].params.temperature == 0.0
    out = tmp_path / "out"
    assert json.loads((out / "judge-validation.json").read_text()) == document
    report = (out / "report.md").read_text()
    assert "**VALIDATED**" in report and "Together-MoA-Lite 60.0%" in report
    assert len((out / "comparisons.jsonl").read_text().splitlines()) == 30
    assert document["judge"]["spec"] == "j:judge" and len(document["judge"]["key"]) == 16


def test_the_known_order_fails_when_the_systems_are_swapped(tmp_path: Path) -> None:
    data = tmp_path / "swapped"
    shutil.copytree(DATA, data)
    folder = data / "reference_outputs"
    (folder / "Together-MoA.json").replace(folder / "tmp.json")
    (folder / "Together-MoA-Lite.json").replace(folder / "Together-MoA.json")
    (folder / "tmp.json").replace(folder / "Together-MoA-Lite.json")
    document = _check(tmp_path, longer, data)[0].run()
    assert document["criteria"]["weak_loses"]["passed"] is True
    assert document["criteria"]["known_order"]["passed"] is False
    assert document["validated"] is False
    assert "**NOT VALIDATED**" in (tmp_path / "out" / "report.md").read_text()


def test_a_position_biased_judge_fails(tmp_path: Path) -> None:
    document = _check(tmp_path, first)[0].run()
    loses = document["criteria"]["weak_loses"]
    assert loses["weak_first"]["mean"] == 0.0 and loses["reference_first"]["mean"] == 100.0
    assert loses["passed"] is False and document["validated"] is False
    consistency = document["criteria"]["position_consistency"]
    assert consistency["rate"]["mean"] == 0.0 and consistency["rate"]["n"] == 30
    # Every pair splits, so both systems sit at exactly 50%: not above it.
    assert document["criteria"]["known_order"]["Together-MoA"]["mean"] == 50.0
    assert document["criteria"]["known_order"]["passed"] is False


def test_a_rerun_is_served_by_the_call_cache(tmp_path: Path) -> None:
    first_run = _check(tmp_path, longer)[0].run()
    check, judge, weak_model = _check(tmp_path, longer)
    again = check.run()
    assert judge.calls == [] and weak_model.calls == []
    assert again["criteria"] == first_run["criteria"]


def test_failures_and_unparsed_verdicts_count_against_the_judge() -> None:
    records: list[dict[str, object]] = [
        {"comparison": "weak", "verdicts": ["reference", "reference"], "preference": 0.0},
        {"comparison": "weak", "verdicts": [None, "reference"], "preference": 0.0},
        {"comparison": "weak", "error": "ProviderError: down"},
        {"comparison": "moa", "verdicts": ["output", "reference"], "preference": 0.5},
        {"comparison": "moa", "verdicts": [None, None], "preference": None},
        {"comparison": "moa_lite", "verdicts": ["output", "output"], "preference": 1.0},
    ]
    result = assess(records)
    assert result.weak_first.mean == pytest.approx(100 / 3) and result.weak_first.n == 3
    assert result.reference_first.mean == pytest.approx(200 / 3)
    assert result.moa.mean == 50.0 and result.moa.n == 1 and result.unjudged == {"moa": 1}
    assert result.failed == {"weak": 1}
    # Consistent: the first weak pair and the MoA-Lite pair, of the five judged pairs.
    assert result.consistency.mean == pytest.approx(40.0) and result.consistency.n == 5
    assert not result.validated


def _weak_pair(first: str | None, second: str | None) -> dict[str, Any]:
    return {"comparison": "weak", "verdicts": [first, second]}


def test_the_weak_check_is_sealed_where_one_order_first_has_too_many_misses() -> None:
    # Over 100 instructions 90% must go to the reference: 10 misses are allowed.
    ten = [_weak_pair("reference", "output")] * 10 + [_weak_pair("reference", "reference")] * 50
    assert early_stop(ten, 100) is None
    eleventh = [*ten, {"comparison": "weak", "error": "ProviderError: down"}, *ten]
    # Sealed at the 61st pair, in order: what comes after it does not move the verdict.
    assert early_stop(eleventh, 100) == EarlyStop(judged=61, order=1, misses=11, allowed=10)
    # Other comparisons do not count, and 12 instructions allow a single miss.
    other: dict[str, Any] = {"comparison": "moa", "verdicts": ["output", "output"]}
    assert early_stop([other] * 5 + [_weak_pair(None, "reference")], 12) is None
    assert early_stop([_weak_pair(None, "reference")] * 3, 12) == EarlyStop(2, 0, 2, 1)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_stop_early_ends_the_judging_once_the_verdict_is_sealed(
    tmp_path: Path, concurrency: int
) -> None:
    check, judge, _ = _check(tmp_path, first, stop_early=True, concurrency=concurrency)
    document = check.run()
    # A judge that always names the first response loses every pair whose weak answer is
    # shown first; 10 instructions allow one miss, so the second weak pair seals it.
    assert document["stopped_early"] == {"judged": 2, "order": 0, "misses": 2, "allowed": 1}
    # Pairs are judged in waves of --concurrency, both orders each: nothing after the wave
    # that sealed it, and only the pairs up to the sealing one are counted.
    assert len(judge.calls) == 2 * max(2, concurrency)
    assert document["validated"] is False
    criteria = document["criteria"]
    assert criteria["weak_loses"]["passed"] is False
    assert criteria["weak_loses"]["weak_first"]["n"] == 2
    assert criteria["known_order"]["passed"] is None
    assert criteria["position_consistency"]["rate"]["n"] == 2
    report = (tmp_path / "out" / "report.md").read_text()
    assert "after 2 of them, with the weak answer shown first" in report
    assert "| not run |" in report
    records = (tmp_path / "out" / "comparisons.jsonl").read_text().splitlines()
    assert [json.loads(line)["comparison"] for line in records] == ["weak", "weak"]


def test_stop_early_changes_nothing_for_a_judge_that_passes(tmp_path: Path) -> None:
    plain = _check(tmp_path / "plain", longer)[0].run()
    early = _check(tmp_path / "early", longer, stop_early=True)[0].run()
    assert early["stopped_early"] is None and plain["stopped_early"] is None
    assert early["criteria"] == plain["criteria"] and early["validated"] is True


def test_missing_data_is_a_clear_error(tmp_path: Path) -> None:
    from moa.errors import ConfigError

    with pytest.raises(ConfigError, match=r"instructions\.json"):
        _check(tmp_path, longer, tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="has only 10"):
        _check(tmp_path, longer, items=11)


# -- the command --------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def judge_config(tmp_path: Path) -> Path:
    def both(request: CompletionRequest) -> str:
        return weak(request) if request.model == "weak" else longer(request)

    return fake_judge_config(tmp_path, both, "judge-cli-fake")[0]


def test_the_command_writes_the_validation(tmp_path: Path, judge_config: Path) -> None:
    args = ["judge", "validate", "--judge", str(judge_config), "--data", str(DATA)]
    args += ["--items", "10", "--weak", "fake:weak", "--out", str(tmp_path / "v")]
    args += ["--cache", str(tmp_path / "calls.sqlite"), "--concurrency", "4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert "validated" in result.stderr and "--judge-validation" in result.stderr
    document = json.loads((tmp_path / "v" / "judge-validation.json").read_text())
    assert document["validated"] and document["command"].startswith("moa judge validate --judge")
    assert "--concurrency 4" in document["command"]
    # Replayed from the cache alone (the last --out and --cache given count).
    replay = runner.invoke(app, [*args, "--out", str(tmp_path / "r"), "--cache-only"])
    assert replay.exit_code == 0, replay.stderr
    again = json.loads((tmp_path / "r" / "judge-validation.json").read_text())
    assert again["criteria"] == document["criteria"]
    empty = [*args, "--out", str(tmp_path / "e"), "--cache", str(tmp_path / "e.sqlite")]
    missing = runner.invoke(app, [*empty, "--cache-only"])
    assert missing.exit_code == 2 and "--cache-only forbids calling any model" in missing.stderr
    # The calls a run used, as a call log: enough to replay it in a cache of its own.
    log = tmp_path / "v.jsonl.gz"
    recorded = runner.invoke(app, [*args, "--out", str(tmp_path / "l"), "--record-calls", str(log)])
    assert recorded.exit_code == 0
    total = len(read_calls(log))
    assert f"call log {log}: {total} calls used by this run, {total} in all" in recorded.stderr
    fresh = ["--cache", str(tmp_path / "fresh.sqlite")]
    assert runner.invoke(app, ["cache", "import", str(log), *fresh]).exit_code == 0
    replay = runner.invoke(app, [*args, "--out", str(tmp_path / "f"), *fresh, "--cache-only"])
    assert replay.exit_code == 0, replay.stderr


def test_the_command_fails_for_a_judge_that_fails(tmp_path: Path, judge_config: Path) -> None:
    args = ["judge", "validate", "--judge", str(judge_config), "--data", str(DATA)]
    args += ["--items", "10", "--weak", "fake:judge", "--out", str(tmp_path / "v")]
    args += ["--cache", str(tmp_path / "calls.sqlite")]
    result = runner.invoke(app, args)  # the "weak" answers are the judge's own short replies
    assert result.exit_code == 1
    assert "NOT validated" in result.stderr


def test_the_command_stops_early_when_asked(tmp_path: Path, judge_config: Path) -> None:
    args = ["judge", "validate", "--judge", str(judge_config), "--data", str(DATA)]
    args += ["--items", "10", "--weak", "fake:judge", "--out", str(tmp_path / "v")]
    args += ["--cache", str(tmp_path / "calls.sqlite"), "--stop-early"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "stopped after 2 instructions" in result.stderr and "not run" in result.stderr
    document = json.loads((tmp_path / "v" / "judge-validation.json").read_text())
    assert document["stopped_early"]["judged"] == 2 and "--stop-early" in document["command"]


def test_the_command_line_default_weak_model_is_the_library_s() -> None:
    from moa.cli.judge import DEFAULT_WEAK as CLI_DEFAULT

    assert CLI_DEFAULT == DEFAULT_WEAK
