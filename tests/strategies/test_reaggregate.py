from __future__ import annotations

from typing import Any

import pytest

from moa import AggregationError, ProviderStatusError
from moa.testing import FakeProvider
from moa.types import CompletionRequest


def system(request: CompletionRequest) -> str:
    return request.messages[0].content if request.messages[0].role == "system" else ""


async def test_replicated_aggregators_are_re_aggregated(build: Any) -> None:
    fake = FakeProvider(
        replies={"p1": "p-one", "p2": "p-two", "x": "syn-x", "y": "syn-y", "final": "done"}
    )
    spec = {
        "layers": [[{"model": "fake:p1"}, {"model": "fake:p2"}]],
        "aggregator": {"model": "fake:final"},
        "strategy": {
            "type": "reaggregate",
            "aggregators": [{"model": "fake:x"}, {"model": "fake:y"}],
        },
    }
    result = await build(spec, fake).arun("q")
    for model in ("x", "y"):
        seen = system(fake.calls_for(model)[0])
        assert "p-one" in seen and "p-two" in seen
    final = system(fake.calls_for("final")[0])
    assert "syn-x" in final and "syn-y" in final and "p-one" not in final
    assert result.output == "done"
    assert sorted(c.model for c in result.extra_calls) == ["fake:x", "fake:y"]
    assert {c.layer for c in result.extra_calls} == {2}
    assert result.aggregator.layer == 3
    assert result.usage.calls == 5


async def test_depth_two_re_aggregates_twice_with_sampled_replicas(build: Any) -> None:
    fake = FakeProvider(default="{model}-{n}")
    spec = {
        "layers": [[{"model": "fake:p"}]],
        "aggregator": {"model": "fake:agg", "seed": 7},
        "strategy": {"type": "reaggregate", "replicas": 2, "depth": 2},
    }
    result = await build(spec, fake).arun("q")
    agg_calls = fake.calls_for("agg")
    assert len(agg_calls) == 5  # 2 + 2 replicas, then the final one
    assert [c.params.seed for c in agg_calls[:2]] == [7, 8]
    stage2 = system(agg_calls[2])
    assert "agg-2" in stage2 and "agg-3" in stage2 and "p-1" not in stage2
    assert len(result.extra_calls) == 4


async def test_one_failed_replica_is_tolerated_all_failed_is_an_error(build: Any) -> None:
    boom = ProviderStatusError("bad", status_code=400)
    spec = {
        "aggregator": {"model": "fake:final"},
        "retry": {"max_attempts": 1},
        "strategy": {
            "type": "reaggregate",
            "aggregators": [{"model": "fake:x"}, {"model": "fake:y"}],
        },
    }
    fake = FakeProvider(replies={"x": boom})
    result = await build(spec, fake).arun("q")
    assert result.output == "answer from final"
    assert "answer from y" in system(fake.calls_for("final")[0])
    with pytest.raises(AggregationError, match="every aggregator"):
        await build(spec, FakeProvider(replies={"x": boom, "y": boom})).arun("q")


def test_aggregators_and_replicas_are_exclusive() -> None:
    from moa import ConfigError
    from moa.config import parse_config

    with pytest.raises(ConfigError, match="either aggregators or replicas"):
        parse_config(
            {
                "aggregator": {"model": "fake:m"},
                "strategy": {
                    "type": "reaggregate",
                    "replicas": 2,
                    "aggregators": [{"model": "fake:x"}],
                },
            }
        )
