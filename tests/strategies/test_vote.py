from __future__ import annotations

from typing import Any

from moa import TextDelta
from moa.testing import FakeProvider

LAYER = [{"model": "fake:a"}, {"model": "fake:b"}, {"model": "fake:c"}]


def spec(**options: Any) -> dict[str, Any]:
    return {
        "layers": [LAYER],
        "aggregator": {"model": "fake:agg"},
        "strategy": {"type": "vote", **options},
    }


async def test_the_majority_answer_wins_without_an_aggregator_call(build: Any) -> None:
    fake = FakeProvider(
        replies={
            "a": "3 + 4 = 7 apples.\n#### 7",
            "b": "So the answer is 8.",
            "c": "She has 7 apples left, since 10 - 3 = 7. The answer is 7.",
        }
    )
    events = [e async for e in build(spec(), fake).astream("q")]
    result = events[-1].result  # type: ignore[union-attr]
    assert result.output == "3 + 4 = 7 apples.\n#### 7"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == result.output
    assert not fake.calls_for("agg")
    assert result.usage.calls == 3
    assert any("'7': 2" in n for n in result.notes)


async def test_a_tie_falls_back_to_synthesis(build: Any) -> None:
    fake = FakeProvider(
        replies={"a": "Answer: 1", "b": "Answer: 2", "c": "no idea", "agg": "synth"}
    )
    result = await build(spec(min_votes=1), fake).arun("q")
    assert result.output == "synth"
    assert any("no clear majority" in n for n in result.notes)


async def test_too_few_votes_fall_back_and_first_on_tie(build: Any) -> None:
    fake = FakeProvider(replies={"a": "Answer: 1", "b": "Answer: 2", "c": "?", "agg": "synth"})
    assert (await build(spec(), fake).arun("q")).output == "synth"
    fake = FakeProvider(replies={"a": "Answer: 1", "b": "Answer: 2", "c": "?"})
    result = await build(spec(min_votes=1, on_tie="first"), fake).arun("q")
    assert result.output == "Answer: 1"


async def test_self_consistency_with_samples_and_a_choice_pattern(build: Any) -> None:
    fake = FakeProvider(replies={"m": ["(B)", "it is C", "I pick B", "agg"]})
    options = {"samples": 3, "answer": "choice"}
    result = await build(
        {"aggregator": {"model": "fake:m"}, "strategy": {"type": "vote", **options}}, fake
    ).arun("q")
    assert result.output == "(B)"
    options = {"samples": 3, "pattern": r"pick (\w)"}
    fake = FakeProvider(replies={"m": ["pick x", "pick y", "pick x"]})
    result = await build(
        {"aggregator": {"model": "fake:m"}, "strategy": {"type": "vote", **options}}, fake
    ).arun("q")
    assert result.output == "pick x"
