from __future__ import annotations

from typing import Any

from moa.testing import FakeProvider
from moa.types import CompletionRequest


def system(request: CompletionRequest) -> str:
    return request.messages[0].content if request.messages[0].role == "system" else ""


def spec(**options: Any) -> dict[str, Any]:
    layer = [{"model": "fake:a"}, {"model": "fake:b"}, {"model": "fake:c"}]
    return {
        "layers": [layer, layer],
        "aggregator": {"model": "fake:agg"},
        "strategy": {"type": "sparse", "judge": {"model": "fake:judge"}, **options},
    }


async def test_only_the_top_k_answers_reach_the_next_layer(build: Any) -> None:
    fake = FakeProvider(
        replies={
            "a": ["a1", "a2"],
            "b": ["b1", "b2"],
            "c": ["c1", "c2"],
            "judge": ["Best: 3, 1\nStop: no", "Best: 2, 3\nStop: no"],
        }
    )
    result = await build(spec(keep=2), fake).arun("q")
    layer2 = system(fake.calls_for("a")[1])
    assert "c1" in layer2 and "a1" in layer2 and "b1" not in layer2
    final = system(fake.calls_for("agg")[0])
    assert "b2" in final and "c2" in final and "a2" not in final
    assert len(result.layers) == 2 and len(result.extra_calls) == 2
    assert "kept answers 3, 1" in " ".join(result.notes)


async def test_the_judge_can_end_the_run_early(build: Any) -> None:
    fake = FakeProvider(replies={"judge": "Best: 1\nStop: yes"})
    result = await build(spec(keep=1), fake).arun("q")
    assert len(result.layers) == 1
    assert len(fake.calls_for("a")) == 1
    assert any("stopped early after layer 1" in n for n in result.notes)


async def test_early_stop_can_be_turned_off(build: Any) -> None:
    fake = FakeProvider(replies={"judge": "Best: 1\nStop: yes"})
    result = await build(spec(keep=1, early_stop=False), fake).arun("q")
    assert len(result.layers) == 2


async def test_no_judge_call_when_nothing_to_select(build: Any) -> None:
    fake = FakeProvider()
    result = await build(spec(keep=3, early_stop=False), fake).arun("q")
    assert not fake.calls_for("judge")
    assert not result.extra_calls


async def test_no_judge_call_when_early_exit_ends_the_run(build: Any) -> None:
    fake = FakeProvider(
        replies={"a": "It is 4.", "b": "The answer is 4", "c": "2 + 2 = 4", "judge": "Best: 1"}
    )
    data = {**spec(keep=2), "early_exit": {"method": "answer"}}
    result = await build(data, fake).arun("2+2?")
    assert len(result.layers) == 1
    assert fake.calls_for("judge") == []
    assert not result.extra_calls
    # No judge chose among the agreeing answers: the aggregator sees them all.
    final = system(fake.calls_for("agg")[0])
    assert all(answer in final for answer in ("It is 4.", "The answer is 4", "2 + 2 = 4"))
    assert any(n.startswith("early exit after layer 1") for n in result.notes)
