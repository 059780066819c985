from __future__ import annotations

from typing import Any

import pytest

from moa.testing import FakeProvider, FunctionProvider
from moa.types import CompletionRequest, estimate_tokens

LONG = "start " + "x" * 4000 + " conclusion 42"


def system(request: CompletionRequest) -> str:
    return request.messages[0].content if request.messages[0].role == "system" else ""


def spec(overflow: str, **extra: Any) -> dict[str, Any]:
    return {
        "layers": [[{"model": "fake:a"}, {"model": "fake:b"}, {"model": "fake:c"}]],
        "aggregator": {"model": "fake:agg", "max_tokens": 100},
        "strategy": {
            "type": "self-moa",
            "samples": None,
            "context": {"windows": {"fake:agg": 1200}, "overflow": overflow, **extra},
        },
    }


async def test_overflowing_references_are_truncated_and_noted(build: Any) -> None:
    fake = FakeProvider(replies={"a": LONG, "b": LONG, "c": "short answer"})
    result = await build(spec("truncate"), fake).arun("q")
    prompt = fake.calls_for("agg")[0]
    tokens = sum(estimate_tokens(m.content) + 4 for m in prompt.messages)
    assert tokens + 100 <= 1200
    seen = system(prompt)
    assert "short answer" in seen
    assert seen.count("start ") == 2 and seen.count("conclusion 42") == 2
    assert "characters left out" in seen
    assert any("truncated to fit its context window of 1200" in n for n in result.notes)


async def test_overflow_switches_to_a_sliding_window(build: Any) -> None:
    prompts: list[int] = []

    def reply(request: CompletionRequest) -> str:
        if request.model == "agg":
            prompts.append(sum(estimate_tokens(m.content) + 4 for m in request.messages))
            return f"synthesis {len(prompts)}"
        return "y" * 1600

    fake = FunctionProvider(reply)
    result = await build(spec("sliding"), fake).arun("q")
    assert len(prompts) >= 2
    assert all(p + 100 <= 1200 for p in prompts)
    assert result.output == f"synthesis {len(prompts)}"
    assert any("sliding window" in n for n in result.notes)
    assert len(result.extra_calls) == len(prompts) - 1


async def test_nothing_happens_when_it_fits_or_no_window_is_known(build: Any) -> None:
    fake = FakeProvider()
    result = await build(spec("truncate"), fake).arun("q")
    assert not result.notes
    fake = FakeProvider(replies={"a": LONG * 10})
    plain = {**spec("truncate"), "strategy": {"type": "self-moa", "samples": None}}
    result = await build(plain, fake).arun("q")
    assert LONG * 10 in system(fake.calls_for("agg")[0])


async def test_refining_layers_get_truncated_references_too(build: Any) -> None:
    fake = FakeProvider(replies={"a": LONG, "b": LONG, "c": LONG})
    data = spec("truncate", window=1000)
    data["layers"] = [data["layers"][0], [{"model": "fake:r"}]]
    result = await build(data, fake).arun("q")
    assert "characters left out" in system(fake.calls_for("r")[0])
    assert any(n.startswith("layer 2:") for n in result.notes)


# The agent of each strategy's own step, and the label its truncation note starts with.
STEPS: dict[str, tuple[dict[str, Any], str]] = {
    "rank": ({"judge": {"model": "fake:small"}}, "rank: "),
    "sparse": ({"judge": {"model": "fake:small"}, "keep": 1}, "sparse judge after layer 1: "),
    "critique": ({"critic": {"model": "fake:small"}}, "critique of answer 1: "),
    "reaggregate": ({"aggregators": [{"model": "fake:small"}]}, "re-aggregation stage 1: "),
}


@pytest.mark.parametrize("strategy", sorted(STEPS))
async def test_a_strategy_step_fits_its_own_agent_and_notes_the_step(
    build: Any, strategy: str
) -> None:
    options, label = STEPS[strategy]
    fake = FakeProvider(replies={"a": LONG, "b": LONG}, default="Best: 1\nStop: no\nok")
    data = {
        "layers": [[{"model": "fake:a"}, {"model": "fake:b"}]],
        "aggregator": {"model": "fake:agg"},
        "strategy": {"type": strategy, **options, "context": {"windows": {"fake:small": 1200}}},
    }
    result = await build(data, fake).arun("q")
    assert fake.calls_for("small")
    for call in fake.calls_for("small"):
        # 512: the reserve for the answer of an agent without max_tokens.
        assert sum(estimate_tokens(m.content) + 4 for m in call.messages) + 512 <= 1200
        assert "characters left out" in system(call)
    assert any(n.startswith(f"{label}references for fake:small truncated") for n in result.notes)
