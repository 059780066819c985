from __future__ import annotations

from typing import Any

from moa import TextDelta
from moa.strategies.common import prompt
from moa.testing import FakeProvider

SPEC = {
    "layers": [[{"model": "fake:a"}, {"model": "fake:b"}, {"model": "fake:c"}]],
    "aggregator": {"model": "fake:judge"},
    "retry": {"max_attempts": 1},
    "strategy": {"type": "rank"},
}


async def test_the_judge_picks_an_answer_and_it_is_returned_verbatim(build: Any) -> None:
    fake = FakeProvider(
        replies={"a": "alpha", "b": "beta", "c": "gamma", "judge": "2 is wrong.\nBest: 3"}
    )
    events = [e async for e in build(SPEC, fake).astream("q")]
    result = events[-1].result  # type: ignore[union-attr]
    assert result.output == "gamma"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "gamma"
    judge_system = fake.calls_for("judge")[0].messages[0].content
    assert prompt("rank") in judge_system and "alpha" in judge_system
    # The judge is the final call: counted once, no synthesis call.
    assert result.usage.calls == 4
    assert result.aggregator.model == "fake:judge"
    assert any("picked answer 3" in n for n in result.notes)


async def test_an_unusable_verdict_keeps_the_first_answer_and_says_so(build: Any) -> None:
    fake = FakeProvider(replies={"a": "alpha", "judge": "they are all good"})
    result = await build(SPEC, fake).arun("q")
    assert result.output == "alpha"
    assert any("unusable" in n for n in result.notes)


async def test_a_failed_judge_still_answers_and_its_call_is_counted(build: Any) -> None:
    from moa import ProviderStatusError

    fake = FakeProvider(
        replies={"a": "alpha", "judge": ProviderStatusError("down", status_code=400)}
    )
    result = await build(SPEC, fake).arun("q")
    assert result.output == "alpha"
    assert result.usage.calls == 4
    assert [c.ok for c in result.extra_calls] == [False]


async def test_a_separate_judge_model(build: Any) -> None:
    spec = {**SPEC, "strategy": {"type": "rank", "judge": {"model": "fake:big"}}}
    fake = FakeProvider(replies={"big": "Best: 2"})
    result = await build(spec, fake).arun("q")
    assert result.output == "answer from b"
    assert not fake.calls_for("judge")
