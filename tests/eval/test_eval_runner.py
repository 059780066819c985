"""Runs over fake models: baselines, scoring, the log, resuming and the call cache."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from eval_helpers import FIXTURES, Interrupted, StopAfter, arithmetic

from moa.errors import ConfigError
from moa.eval import EvalOptions, EvalRun, GenerationSettings, select_items
from moa.eval.datasets import load_gsm8k
from moa.eval.records import ItemLog
from moa.eval.report import write_report
from moa.history import HistorySettings, HistoryStore
from moa.providers.cache import CachingRegistry, SQLiteCallStore
from moa.testing import FunctionProvider

DATA = str(FIXTURES / "gsm8k_mini.jsonl")


def _options(out: Path, *systems: str, **changes: Any) -> EvalOptions:
    return EvalOptions("gsm8k", DATA, out, systems=systems, **changes)


def _records(out: Path) -> list[dict[str, Any]]:
    return list(ItemLog(out / "items.jsonl"))


def test_baselines_are_added_and_duplicates_dropped(
    tmp_path: Path, registry: CachingRegistry, mixture_file: Path
) -> None:
    run = EvalRun(_options(tmp_path / "out", str(mixture_file), "fake:strong"), registry=registry)
    assert [s.name for s in run.systems] == ["mix", "fake:strong", "fake:weak", "fake:agg"]
    assert [s.origin for s in run.systems] == ["user", "user", "baseline", "baseline"]
    run.run()
    systems = {r["system"] for r in _records(tmp_path / "out")}
    assert "self-moa-strong" in systems  # Self-MoA of the best single model
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["systems"][-1]["origin"] == "self-moa"


def test_scores_votes_and_oracle(
    tmp_path: Path, registry: CachingRegistry, mixture_file: Path
) -> None:
    out = tmp_path / "out"
    EvalRun(_options(out, str(mixture_file), baselines=False), registry=registry).run()
    records = _records(out)
    assert len(records) == 6 and {r["system"] for r in records} == {"mix"}
    by_item = {r["item_id"]: r for r in records}
    tom = by_item["0"]  # weak says 8, strong says 7: the aggregator trusts the last reference
    assert tom["gold"] == "7" and tom["score"] == 1.0
    assert [c["extracted"] for c in tom["calls"]] == ["8", "7", "7"]
    assert tom["vote"] == {"answer": "8", "correct": False}  # a tie goes to the first proposer
    assert tom["oracle"] is True
    assert tom["usage"]["calls"] == 3
    friends = by_item["5"]
    assert friends["extracted"] == "10000"  # "10,000" read as a number


def test_rerun_is_free_and_skips_logged_items(
    tmp_path: Path, registry: CachingRegistry, fake: FunctionProvider, mixture_file: Path
) -> None:
    out = tmp_path / "out"
    EvalRun(_options(out, str(mixture_file)), registry=registry).run()
    calls, lines = len(fake.calls), len(_records(out))
    EvalRun(_options(out, str(mixture_file)), registry=registry).run()
    assert len(fake.calls) == calls
    assert len(_records(out)) == lines  # nothing was run again
    # Into a fresh folder: every item runs again, but every call comes from the cache.
    EvalRun(_options(tmp_path / "fresh", str(mixture_file)), registry=registry).run()
    assert len(fake.calls) == calls
    assert len(_records(tmp_path / "fresh")) == lines
    assert all(r["latency_source"] == "replayed" for r in _records(tmp_path / "fresh"))


def test_resume_after_interruption(tmp_path: Path, mixture_file: Path) -> None:
    out = tmp_path / "out"
    counting = FunctionProvider(arithmetic, name="fake")
    store = tmp_path / "calls.sqlite"
    with pytest.raises(Interrupted):
        registry = CachingRegistry(store=SQLiteCallStore(store)).add("fake", counting)
        EvalRun(_options(out, str(mixture_file), baselines=False), registry=registry).run(
            StopAfter(4)
        )
    assert len(_records(out)) == 4
    assert len(counting.calls) == 4 * 3
    # A crash mid-write leaves half a line: it is ignored and that item runs again.
    with (out / "items.jsonl").open("a") as handle:
        handle.write('{"system": "mix", "item_id": "4", "sco')
    registry = CachingRegistry(store=SQLiteCallStore(store)).add("fake", counting)
    observer = StopAfter(0)
    EvalRun(_options(out, str(mixture_file), baselines=False), registry=registry).run(observer)
    assert observer.done == 4
    records = _records(out)
    assert sorted(r["item_id"] for r in records) == ["0", "1", "2", "3", "4", "5"]
    assert len(counting.calls) == 6 * 3  # only the two missing items were computed


def test_changed_settings_do_not_reuse_old_records(
    tmp_path: Path, registry: CachingRegistry
) -> None:
    out = tmp_path / "out"
    EvalRun(_options(out, "fake:strong", baselines=False), registry=registry).run()
    run = EvalRun(_options(out, "fake:strong", baselines=False, timeout=999), registry=registry)
    assert run.count_done(run.systems, run.log.completed()) == 6  # a timeout changes nothing
    shorter = GenerationSettings(max_tokens=7)
    run = EvalRun(
        _options(out, "fake:strong", baselines=False, generation=shorter), registry=registry
    )
    assert run.count_done(run.systems, run.log.completed()) == 0


def test_failed_items_are_logged_and_retried(tmp_path: Path) -> None:
    attempts = {"n": 0}

    def flaky(request: Any) -> str:
        attempts["n"] += 1
        if attempts["n"] <= 1:
            raise RuntimeError("model crashed")
        return arithmetic(request)

    provider = FunctionProvider(flaky, name="fake")
    registry = CachingRegistry(store=SQLiteCallStore(tmp_path / "c.sqlite")).add("fake", provider)
    out = tmp_path / "out"
    config = tmp_path / "once.yaml"
    config.write_text('name: once\naggregator: {model: "fake:strong"}\nretry: {max_attempts: 1}\n')
    options = _options(out, str(config), baselines=False, limit=2)
    EvalRun(options, registry=registry).run()
    first = _records(out)
    assert [bool(r.get("error")) for r in first] == [True, False]
    EvalRun(options, registry=registry).run()
    latest = {r["item_id"]: r for r in _records(out)}
    assert not latest["0"].get("error") and latest["0"]["score"] == 1.0


def test_concurrency_limit(tmp_path: Path) -> None:
    slow = FunctionProvider(arithmetic, name="fake", delay=0.02)
    registry = CachingRegistry(store=SQLiteCallStore(tmp_path / "c.sqlite")).add("fake", slow)
    options = _options(tmp_path / "o", "fake:strong", baselines=False, concurrency=3)
    EvalRun(options, registry=registry).run()
    assert slow.max_in_flight == 3


def test_item_selection() -> None:
    items = load_gsm8k(DATA)
    assert [i.id for i in select_items(items, limit=2)] == ["0", "1"]
    assert [i.id for i in select_items(items, indices=[4, 1])] == ["4", "1"]
    shuffled = [i.id for i in select_items(items, shuffle=True, seed=3)]
    assert sorted(shuffled) == [i.id for i in items] and shuffled != [i.id for i in items]
    assert shuffled == [i.id for i in select_items(items, shuffle=True, seed=3)]
    with pytest.raises(ConfigError):
        select_items(items, indices=[99])


def test_judged_tasks_need_a_judge(tmp_path: Path, registry: CachingRegistry) -> None:
    options = EvalOptions(
        "alpaca_eval", str(FIXTURES / "alpaca_reference.json"), tmp_path, systems=["fake:strong"]
    )
    with pytest.raises(ConfigError, match="--judge"):
        EvalRun(options, registry=registry)


def test_the_event_loop_is_not_left_running(tmp_path: Path, registry: CachingRegistry) -> None:
    EvalRun(_options(tmp_path / "o", "fake:strong", baselines=False), registry=registry).run()
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


def test_blocks_put_every_system_on_the_first_items(
    tmp_path: Path, registry: CachingRegistry, mixture_file: Path
) -> None:
    out = tmp_path / "out"
    run = EvalRun(_options(out, str(mixture_file), block=2), registry=registry)
    with pytest.raises(Interrupted):
        run.run(StopAfter(2 * 5))  # the first block: 3 models alone, then mix and Self-MoA
    records = _records(out)
    assert {r["item_id"] for r in records} == {"0", "1"}
    # Within a block each system answers its items side by side (local models batch them).
    assert [r["system"] for r in records[:6]] == ["fake:weak"] * 2 + ["fake:strong"] * 2 + [
        "fake:agg"
    ] * 2
    assert {r["system"] for r in records[6:]} == {"mix", "self-moa-strong"}
    assert json.loads((out / "run.json").read_text())["self_moa_of"] == "fake:strong"


def test_a_resumed_run_keeps_its_self_moa(
    tmp_path: Path, registry: CachingRegistry, mixture_file: Path
) -> None:
    out = tmp_path / "out"
    with pytest.raises(Interrupted):
        EvalRun(_options(out, str(mixture_file), block=2), registry=registry).run(StopAfter(7))
    info = json.loads((out / "run.json").read_text())
    info["self_moa_of"] = "fake:weak"  # as if weak had looked best on the first block
    (out / "run.json").write_text(json.dumps(info))
    run = EvalRun(_options(out, str(mixture_file), block=2), registry=registry)
    run.run()
    assert "self-moa-weak" in {r["system"] for r in _records(out)}
    assert "self-moa-strong" not in {r["system"] for r in _records(out)}


def test_self_moa_starts_from_the_single_models_own_answer(
    tmp_path: Path, registry: CachingRegistry, fake: FunctionProvider
) -> None:
    out = tmp_path / "out"
    options = _options(out, "fake:strong", generation=GenerationSettings(samples=3))
    EvalRun(options, registry=registry).run()
    records = _records(out)
    singles = {r["item_id"]: r for r in records if r["system"] == "fake:strong"}
    for record in (r for r in records if r["system"] == "self-moa-strong"):
        proposals = [c for c in record["calls"] if c["role"] != "aggregator"]
        assert len(proposals) == 3
        # The first proposal is the single model's answer: the same call, served by the cache.
        assert proposals[0]["output"] == singles[record["item_id"]]["output"]
    # Per item: the single call, two samples and one aggregation; nothing drawn twice.
    assert len(fake.calls) == len(singles) * 4


def test_a_strategy_s_sampled_model_gets_its_baseline(
    tmp_path: Path, registry: CachingRegistry
) -> None:
    path = tmp_path / "weak-samples.yaml"
    path.write_text(
        'name: weak-samples\naggregator: {model: "fake:agg"}\n'
        "strategy: {type: vote, samples: 3, model: {model: 'fake:weak'}}\n"
    )
    out = tmp_path / "out"
    options = EvalOptions("gsm8k", str(FIXTURES / "gsm8k_mini.jsonl"), out, systems=[str(path)])
    EvalRun(options, registry=registry).run()
    names = {json.loads(line)["system"] for line in (out / "items.jsonl").read_text().splitlines()}
    assert {"weak-samples", "fake:agg", "fake:weak"} <= names


def test_a_failed_item_is_in_the_history_with_its_error(tmp_path: Path) -> None:
    def crashes_first(request: Any) -> str:
        if "Tom" in request.messages[-1].content:
            raise RuntimeError("model crashed")
        return arithmetic(request)

    provider = FunctionProvider(crashes_first, name="fake")
    registry = CachingRegistry(store=SQLiteCallStore(tmp_path / "c.sqlite")).add("fake", provider)
    config = tmp_path / "once.yaml"
    config.write_text('name: once\naggregator: {model: "fake:strong"}\nretry: {max_attempts: 1}\n')
    history = HistorySettings(tmp_path / "history.sqlite")
    options = _options(tmp_path / "out", str(config), baselines=False, limit=2, history=history)
    EvalRun(options, registry=registry).run()  # writes out the history before returning

    records = {r["item_id"]: r for r in _records(tmp_path / "out")}
    store = HistoryStore(history.path, create=False)
    failed = store.get(records["0"]["history_ids"][0])
    assert failed.row["source"] == "eval" and failed.row["output"] is None
    assert "model crashed" in failed.row["error"] and failed.failed
    answered = store.get(records["1"]["history_ids"][0])
    assert answered.row["output"] == records["1"]["output"] and not answered.failed
    assert store.count() == 2


def test_a_programs_call_is_scored_by_what_it_printed() -> None:
    from moa.eval.scorers import score_exact_record

    def call(output: str, **more: Any) -> dict[str, Any]:
        return {"layer": 1, "role": "proposer", "output": output, **more}

    code = "```python\napples = 40\nprint(apples // 3)\n```"
    for computed, extracted, oracle in (("13", "13", True), (None, None, False)):
        more = {} if computed is None else {"computed": computed}
        record = {
            "gold": "13",
            "output": "The answer is 12",
            "calls": [call("The answer is 12"), call(code, **more)],
        }
        score_exact_record(record)
        assert [c["extracted"] for c in record["calls"]] == ["12", extracted]
        assert record["oracle"] is oracle  # only the program's printed 13 was right


def test_a_run_over_part_of_a_report_adds_to_it(
    tmp_path: Path, registry: CachingRegistry, mixture_file: Path
) -> None:
    out = tmp_path / "out"
    first = _options(out, "fake:strong", baselines=False, command="moa eval all")
    EvalRun(first, registry=registry).run()
    part = _options(out, "fake:weak", baselines=False, indices=(1, 2), command="moa eval part")
    EvalRun(part, registry=registry).run()
    info = json.loads((out / "run.json").read_text())
    assert info["items"] == 6 and info["item_ids"] == ["0", "1", "2", "3", "4", "5"]
    assert [s["name"] for s in info["systems"]] == ["fake:strong", "fake:weak"]
    assert info["command"] == "moa eval all"
    assert info["more_commands"] == ["moa eval part"]
    summary = write_report(out)
    assert [s.name for s in summary.systems] == ["fake:strong", "fake:weak"]
    assert summary.common_items == 2  # weak answered two items: compared on those
    report = (out / "report.md").read_text()
    assert "- Command: `moa eval all`" in report
    assert "- Added to by: `moa eval part`" in report
    # A run over everything there is becomes the command that reproduces the report.
    whole = _options(out, "fake:strong", "fake:weak", baselines=False, command="moa eval both")
    EvalRun(whole, registry=registry).run()
    info = json.loads((out / "run.json").read_text())
    assert info["command"] == "moa eval both" and "more_commands" not in info


def test_a_different_evaluation_into_the_folder_replaces_its_run_info(
    tmp_path: Path, registry: CachingRegistry
) -> None:
    out = tmp_path / "out"
    EvalRun(_options(out, "fake:strong", baselines=False), registry=registry).run()
    other = _options(out, "fake:weak", baselines=False, indices=(0,), prompts_dir=tmp_path)
    EvalRun(other, registry=registry).run()
    info = json.loads((out / "run.json").read_text())
    assert info["item_ids"] == ["0"] and [s["name"] for s in info["systems"]] == ["fake:weak"]
