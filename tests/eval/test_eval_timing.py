"""An item's latency: wall time, or rebuilt from the calls' own durations, the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from eval_helpers import FIXTURES, arithmetic

from moa.engine.result import AgentResult, LayerResult, Result
from moa.eval import EvalOptions, EvalRun
from moa.eval.records import ItemLog
from moa.eval.timing import Timing, item_timing
from moa.providers.cache import CacheHit, CachingRegistry, SQLiteCallStore
from moa.testing import FunctionProvider


def _call(latency: float, queued: float = 0.0, output: str = "x", **more: Any) -> AgentResult:
    return AgentResult(
        agent="a", model="fake:m", layer=1, index=0, role="proposer", output=output,
        latency_s=latency, queued_s=queued, **more,
    )  # fmt: skip


def _result(layer: LayerResult, aggregator: AgentResult, wall: float) -> Result:
    return Result("done", (layer,), aggregator, latency_s=wall, ttft_s=wall - 0.5)


def test_an_item_no_call_of_which_waited_keeps_its_wall_time() -> None:
    result = _result(LayerResult(1, (_call(1.0), _call(2.0))), _call(1.0), 3.2)
    timing = item_timing(result, [])
    assert (timing.latency_s, timing.ttft_s, timing.source) == (3.2, 2.7, "measured")
    assert timing.cached_latency_s == (None, None, None)  # two proposers, the aggregator


def test_waiting_for_a_free_slot_is_left_out_and_waves_follow_each_other() -> None:
    # Two waves: the first two samples, then a third once they were done.
    layer = LayerResult(1, (_call(1.0, 0.5), _call(2.0), _call(3.0, 1.0)), waves=(2, 1))
    aggregator = _call(1.5, 0.2, ttft_s=0.7)
    timing = item_timing(_result(layer, aggregator, 9.0), [])
    assert timing.source == "rebuilt"
    assert timing.latency_s == 2.0 + 2.0 + 1.3  # per wave the slowest, then the aggregator
    assert timing.ttft_s is not None and abs(timing.ttft_s - (4.0 + 0.5)) < 1e-9


def test_a_cache_hit_counts_the_duration_of_the_call_that_filled_the_cache() -> None:
    layer = LayerResult(1, (_call(0.001, output="a"), _call(0.001, output="b")))
    hits = [
        CacheHit("fake", "m", "b", 4.0, None),
        CacheHit("fake", "m", "a", 1.0, None),
        CacheHit("fake", "m", "final", 2.0, 0.5),
    ]
    timing = item_timing(_result(layer, _call(0.001, output="final"), 0.01), hits)
    assert (timing.latency_s, timing.ttft_s, timing.source) == (6.0, 4.5, "replayed")
    assert timing.cached_latency_s == (1.0, 4.0, 2.0)  # per call, in the result's order
    # A resumed item: the samples came from the cache, the aggregator ran live.
    timing = item_timing(_result(layer, _call(1.5, output="new"), 1.6), hits[:2])
    assert (timing.latency_s, timing.source) == (4.0 + 1.5, "rebuilt")
    assert timing.cached_latency_s == (1.0, 4.0, None)


def test_a_multi_turn_item_is_replayed_or_measured_only_when_every_turn_was() -> None:
    from moa.eval.worker import _accounting

    def source(*sources: str) -> str:
        results = [_result(LayerResult(1, (_call(1.0),)), _call(1.0), 2.0) for _ in sources]
        timings = [Timing(2.0, 1.5, s) for s in sources]  # type: ignore[arg-type]
        return str(_accounting(results, timings)["latency_source"])

    assert source("replayed", "replayed") == "replayed"
    assert source("measured", "measured") == "measured"
    assert source("replayed", "measured") == "rebuilt"  # turn 2 was asked live
    assert source("measured", "rebuilt") == "rebuilt"


def _records(out: Path) -> list[dict[str, Any]]:
    return list(ItemLog(out / "items.jsonl"))


def test_a_live_run_and_its_replay_report_the_same_latency(
    tmp_path: Path, mixture_file: Path
) -> None:
    """Six items at once through a provider that takes one call at a time: the live items
    queue behind each other, and are timed as if they had not, like their replay."""
    slow = FunctionProvider(arithmetic, name="fake", delay=0.05, max_concurrency=1)
    registry = CachingRegistry(store=SQLiteCallStore(tmp_path / "calls.sqlite")).add("fake", slow)
    data = str(FIXTURES / "gsm8k_mini.jsonl")

    def run(out: Path) -> list[dict[str, Any]]:
        options = EvalOptions(
            "gsm8k", data, out, systems=(str(mixture_file),), baselines=False, concurrency=6
        )
        EvalRun(options, registry=registry).run()
        return sorted(_records(out), key=lambda r: r["item_id"])

    live = run(tmp_path / "live")
    assert len(slow.calls) == 18
    waited = [r for r in live if r["latency_source"] == "rebuilt"]
    assert len(waited) >= 4  # at most the first items found the slot free
    assert all(r["latency_s"] <= r["wall_s"] for r in live)
    # The last items waited for most of the 18 calls; each needs two after another.
    assert max(r["wall_s"] for r in live) > 3 * max(r["latency_s"] for r in live)
    assert any("queued_s" in call for r in waited for call in r["calls"])

    replay = run(tmp_path / "replay")
    assert len(slow.calls) == 18  # every call came from the cache
    assert {r["latency_source"] for r in replay} == {"replayed"}
    assert not any("cached_latency_s" in call for r in live for call in r["calls"])
    # Each replayed call names the duration of the call that filled the cache.
    for before, after in zip(live, replay, strict=True):
        filled = [c["latency_s"] - c.get("queued_s", 0.0) for c in before["calls"]]
        cached = [c["cached_latency_s"] for c in after["calls"]]
        assert cached == pytest.approx(filled, abs=0.01)
    total_live = sum(r["latency_s"] for r in live)
    total_replay = sum(r["latency_s"] for r in replay)
    assert abs(total_live - total_replay) <= 0.2 * total_live
