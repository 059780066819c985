from __future__ import annotations

from typing import Any

import pytest

from moa import ConfigError, Done, LayerStarted, MixtureSpec, TextDelta
from moa.config import parse_config
from moa.strategies.common import role_names, role_prompt
from moa.testing import FakeProvider, FunctionProvider
from moa.types import CompletionRequest


def system(request: CompletionRequest) -> str:
    return request.messages[0].content if request.messages[0].role == "system" else ""


async def test_self_moa_samples_one_model_with_distinct_seeds_then_aggregates(build: Any) -> None:
    fake = FakeProvider(replies={"m": ["s1", "s2", "s3", "final"]})
    spec = {"aggregator": {"model": "fake:m"}, "strategy": {"type": "self-moa", "samples": 3}}
    result = await build(spec, fake).arun("q")
    samples = fake.calls[:3]
    assert [c.params.seed for c in samples] == [0, 1, 2]
    assert {c.params.temperature for c in samples} == {0.7}
    assert [a.output for a in result.layers[0].agents] == ["s1", "s2", "s3"]
    final_system = system(fake.calls[3])
    assert all(s in final_system for s in ("s1", "s2", "s3"))
    assert result.output == "final"
    assert result.usage.calls == 4


async def test_self_moa_other_sampled_model_greedy_first_and_temperature_list(build: Any) -> None:
    fake = FakeProvider()
    spec = {
        "aggregator": {"model": "fake:agg"},
        "strategy": {
            "type": "self-moa",
            "samples": 4,
            "model": {"model": "fake:small", "max_tokens": 50},
            "temperature": [0.5, 1.0],
            "greedy_first": True,
            "seed": 10,
        },
    }
    await build(spec, fake).arun("q")
    samples = fake.calls_for("small")
    assert [c.params.temperature for c in samples] == [0.0, 1.0, 0.5, 1.0]
    assert [c.params.seed for c in samples] == [10, 11, 12, 13]
    assert all(c.params.max_tokens == 50 for c in samples)
    assert len(fake.calls_for("agg")) == 1


async def test_configured_layers_refine_the_samples(build: Any) -> None:
    fake = FakeProvider(replies={"m": ["s1", "s2", "final"], "r": "refined"})
    spec = {
        "layers": [[{"model": "fake:r"}]],
        "aggregator": {"model": "fake:m"},
        "strategy": {"type": "self-moa", "samples": 2},
    }
    result = await build(spec, fake).arun("q")
    assert len(result.layers) == 2
    assert "s1" in system(fake.calls_for("r")[0]) and "s2" in system(fake.calls_for("r")[0])
    assert "refined" in system(fake.calls[-1])


async def test_self_moa_seq_sees_synthesis_plus_window_new_samples(build: Any) -> None:
    seen: list[str] = []

    def reply(request: CompletionRequest) -> str:
        text = system(request)
        if "Candidate answer" not in text:
            return f"sample{request.params.seed}"
        seen.append(text)
        return f"synthesis{len(seen)}"

    fake = FunctionProvider(reply)
    spec = {
        "aggregator": {"model": "fake:m"},
        "strategy": {"type": "self-moa-seq", "samples": 5, "window": 2},
    }
    events = [e async for e in build(spec, fake).astream("q")]
    result = events[-1].result  # type: ignore[union-attr]
    # 5 samples, 2 a step: [s0 s1] -> syn1; [syn1 s2 s3] -> syn2; [syn2 s4] -> final.
    assert len(seen) == 3
    assert "sample0" in seen[0] and "sample1" in seen[0] and "sample2" not in seen[0]
    assert "synthesis1" in seen[1] and "sample2" in seen[1] and "sample3" in seen[1]
    assert "sample0" not in seen[1]
    assert "synthesis2" in seen[2] and "sample4" in seen[2]
    assert result.output == "synthesis3"
    assert len(result.extra_calls) == 2
    assert result.usage.calls == 8
    # Only the last step streams as the final answer.
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "synthesis3"
    assert sum(isinstance(e, LayerStarted) and e.role == "aggregator" for e in events) == 3
    assert isinstance(events[-1], Done)


async def test_roles_strategy_gives_each_sample_a_shipped_role(build: Any) -> None:
    fake = FakeProvider()
    spec = {
        "aggregator": {"model": "fake:m"},
        "strategy": {"type": "roles", "roles": ["careful", "checker", "Be brief."]},
    }
    result = await build(spec, fake).arun("q")
    systems = [system(c) for c in fake.calls[:3]]
    assert systems[0] == role_prompt("careful")
    assert systems[1] == role_prompt("checker")
    assert systems[2] == "Be brief."
    assert len(result.layers[0].agents) == 3


def test_roles_default_to_every_shipped_role() -> None:
    spec = MixtureSpec.model_validate(
        {"aggregator": {"model": "fake:m"}, "strategy": {"type": "roles"}}
    )
    assert spec.strategy.options().roles == role_names()  # type: ignore[attr-defined]
    assert {"careful", "checker"} <= set(role_names())


@pytest.mark.parametrize(
    "strategy",
    [
        {"type": "self-moa", "sample": 3},
        {"type": "self-moa", "samples": 0},
        {"type": "vote", "model": {"model": "fake:x"}},
        {"type": "self-moa-seq", "window": 0},
        {"type": "self-moa", "temperature": []},
    ],
)
def test_bad_options_are_config_errors(strategy: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        parse_config({"aggregator": {"model": "fake:m"}, "strategy": strategy})


async def test_the_mixture_s_early_exit_applies_to_these_strategies(build: Any) -> None:
    fake = FakeProvider(replies={"m": "The answer is 4", "r": "The answer is 4"})
    spec = {
        "layers": [[{"model": "fake:r"}], [{"model": "fake:r"}]],
        "aggregator": {"model": "fake:m"},
        "early_exit": {"method": "answer"},
        "strategy": {"type": "self-moa", "samples": 3},
    }
    result = await build(spec, fake).arun("q")
    assert len(result.layers) == 1
    assert any("early exit after layer 1" in n for n in result.notes)
