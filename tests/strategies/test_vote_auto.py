"""``answer: auto`` (vote only where replies can be counted) and the adaptive two-wave vote."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moa import (
    AgentDone,
    Event,
    LayerDone,
    LayerStarted,
    Mixture,
    MixtureSpec,
    ProviderRegistry,
    TextDelta,
)
from moa.config import parse_config
from moa.errors import ConfigError
from moa.testing import FunctionProvider
from moa.types import CompletionRequest

MATH = "Tom has 3 apples and buys 4 more. How many apples does he have?"
CHOICE = "Which is a prime?\nA. 4\nB. 6\nC. 7\nD. 9"
PROSE = "What is the capital of France?"


def by_seed(answers: list[str | None]) -> FunctionProvider:
    """Sample ``i`` (seed ``i``) states ``answers[i]``; None states nothing countable."""

    def reply(request: CompletionRequest) -> str:
        if request.messages[0].role == "system":  # a synthesis over the samples
            return "synthesis"
        answer = answers[request.params.seed or 0]
        return (
            "I am not sure."
            if answer is None
            else f"Reasoning {request.params.seed}. The answer is {answer}"
        )

    return FunctionProvider(reply, name="fake")


def mixture(provider: FunctionProvider, **options: Any) -> Mixture:
    strategy = {"type": "vote", "samples": 5, "greedy_first": True, "answer": "auto", **options}
    spec = MixtureSpec.model_validate({"aggregator": {"model": "fake:m"}, "strategy": strategy})
    return Mixture(spec, ProviderRegistry().add("fake", provider))


async def test_a_question_with_a_number_stops_after_three_agreeing_samples() -> None:
    provider = by_seed(["7", "7", "7", "8", "8"])
    result = await mixture(provider, adaptive=True).arun(MATH)
    assert result.output == "Reasoning 0. The answer is 7"
    assert result.usage.calls == 3
    assert [a.agent for a in result.layers[0].agents] == ["sample 1", "sample 2", "sample 3"]
    assert [call.params.seed for call in provider.calls] == [0, 1, 2]
    assert provider.calls[0].params.temperature == 0.0
    assert any("decided after 3 of 5" in n for n in result.notes)
    assert result.layers[0].waves == ()  # one wave: every sample started at once


async def test_an_open_first_wave_draws_the_rest_into_the_same_layer() -> None:
    provider = by_seed(["7", "8", "7", "8", "8"])
    result = await mixture(provider, adaptive=True).arun(MATH)
    assert result.output == "Reasoning 1. The answer is 8"
    assert len(result.layers) == 1
    layer = result.layers[0]
    assert [a.agent for a in layer.agents] == [f"sample {i}" for i in range(1, 6)]
    assert [a.index for a in layer.agents] == [0, 1, 2, 3, 4]
    assert result.usage.calls == 5
    assert layer.waves == (3, 2)  # the rest started once the first three were done
    assert [len(wave) for wave in layer.in_waves()] == [3, 2]
    assert layer.to_dict()["waves"] == [3, 2]


def layer_events(events: list[Event]) -> list[tuple[str, int, tuple[str, ...]]]:
    """What a consumer is told of the proposer layers: each event, its layer, its agents."""
    seen: list[tuple[str, int, tuple[str, ...]]] = []
    for event in events:
        if isinstance(event, LayerStarted):
            agents = tuple(f"{event.first_index + i}: {a}" for i, a in enumerate(event.agents))
            seen.append(("started", event.layer, agents))
        elif isinstance(event, AgentDone):
            seen.append(
                ("agent", event.result.layer, (f"{event.result.index}: {event.result.agent}",))
            )
        elif isinstance(event, LayerDone):
            agents = tuple(f"{a.index}: {a.agent}" for a in event.layer.agents)
            seen.append(("done", event.layer.index, agents))
    return seen


async def test_the_second_wave_joins_the_layer_which_is_done_once_with_every_sample() -> None:
    events = [
        e async for e in mixture(by_seed(["7", "8", "7", "8", "8"]), adaptive=True).astream(MATH)
    ]
    sample = [f"{i}: sample {i + 1}" for i in range(5)]
    assert layer_events(events) == [
        ("started", 1, tuple(sample[:3])),
        *(("agent", 1, (one,)) for one in sample[:3]),
        ("started", 1, tuple(sample[3:])),
        *(("agent", 1, (one,)) for one in sample[3:]),
        ("done", 1, tuple(sample)),
    ]
    result = events[-1].result  # type: ignore[union-attr]
    assert result.layers[0] == next(e.layer for e in events if isinstance(e, LayerDone))


async def test_a_vote_decided_by_the_first_wave_reports_that_wave_alone() -> None:
    events = [
        e async for e in mixture(by_seed(["7", "7", "7", "8", "8"]), adaptive=True).astream(MATH)
    ]
    sample = [f"{i}: sample {i + 1}" for i in range(3)]
    assert layer_events(events) == [
        ("started", 1, tuple(sample)),
        *(("agent", 1, (one,)) for one in sample),
        ("done", 1, tuple(sample)),
    ]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["1", "2", "3", None]), min_size=5, max_size=5))
def test_adaptive_gives_the_full_votes_answer_with_no_more_calls(answers: list[str | None]) -> None:
    full = asyncio.run(mixture(by_seed(answers)).arun(MATH))
    provider = by_seed(answers)
    adaptive = asyncio.run(mixture(provider, adaptive=True).arun(MATH))
    assert adaptive.output == full.output
    assert adaptive.usage.calls <= full.usage.calls
    # The calls it made are the full vote's first ones, identical (so a cache serves both).
    assert [c.params.seed for c in provider.calls if c.messages[0].role != "system"] == list(
        range(len(provider.calls) - (adaptive.output == "synthesis"))
    )


async def test_a_choice_question_is_voted_on_its_letter() -> None:
    def reply(request: CompletionRequest) -> str:
        return ["I think C.", "The answer is (C)", "B) 6", "C", "B"][request.params.seed or 0]

    result = await mixture(FunctionProvider(reply, name="fake"), adaptive=True).arun(CHOICE)
    assert result.output == "I think C."
    assert any("asks for a choice" in n for n in result.notes)


async def test_prose_gets_the_greedy_answer_alone_streamed() -> None:
    provider = by_seed(["Paris", "Lyon", "Nice", "Nice", "Nice"])
    events = [e async for e in mixture(provider, adaptive=True).astream(PROSE)]
    result = events[-1].result  # type: ignore[union-attr]
    assert result.output == "Reasoning 0. The answer is Paris"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == result.output
    assert result.usage.calls == 1
    assert provider.calls[0].params.temperature == 0.0
    assert any("no number or choice" in n for n in result.notes)


def test_auto_and_adaptive_need_samples() -> None:
    for options in ({"answer": "auto"}, {"adaptive": True}):
        config = {
            "layers": [[{"model": "fake:a"}]],
            "aggregator": {"model": "fake:m"},
            "strategy": {"type": "vote", **options},
        }
        with pytest.raises(ConfigError, match=r"strategy.*needs samples"):
            parse_config(config)


async def test_auto_votes_only_on_the_kinds_it_is_given() -> None:
    def reply(request: CompletionRequest) -> str:
        return ["I think C.", "B", "B", "B", "B"][request.params.seed or 0]

    provider = FunctionProvider(reply, name="fake")
    result = await mixture(provider, adaptive=True, auto_votes=["number"]).arun(CHOICE)
    assert result.output == "I think C."
    assert result.usage.calls == 1
    assert any("a choice, not voted on" in n for n in result.notes)


async def test_a_small_first_wave_stops_when_it_agrees() -> None:
    provider = by_seed(["7", "7", "8", "8", "8"])
    result = await mixture(provider, adaptive=True, first_wave=2).arun(MATH)
    assert result.output == "Reasoning 0. The answer is 7"  # the agreement stop, not the 3-2 vote
    assert result.usage.calls == 2
    assert any("decided after 2 of 5" in n for n in result.notes)
    provider = by_seed(["7", "8", "8", "7", "8"])
    result = await mixture(provider, adaptive=True, first_wave=2).arun(MATH)
    assert result.output == "Reasoning 1. The answer is 8"
    assert result.usage.calls == 5


def test_first_wave_needs_adaptive_and_fits_the_samples() -> None:
    for options, message in (
        ({"first_wave": 2}, "only applies with adaptive"),
        ({"first_wave": 6, "adaptive": True}, r"exceeds samples \(5\)"),
    ):
        strategy = {"type": "vote", "samples": 5, **options}
        with pytest.raises(ConfigError, match=message):
            parse_config({"aggregator": {"model": "fake:m"}, "strategy": strategy})
