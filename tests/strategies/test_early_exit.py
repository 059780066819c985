from __future__ import annotations

from typing import Any

import pytest

from moa import Mixture, MixtureSpec, ProviderRegistry
from moa.engine.spec import EarlyExitSpec
from moa.engine.strategy import strategy_names
from moa.strategies.early_exit import agreement, similarity
from moa.testing import FakeProvider

THREE_LAYERS = {
    "layers": [[{"model": "fake:a"}, {"model": "fake:b"}]] * 3,
    "aggregator": {"model": "fake:agg"},
}


def mixture(early_exit: dict[str, Any] | None, fake: FakeProvider) -> Mixture:
    spec = MixtureSpec.model_validate({**THREE_LAYERS, "early_exit": early_exit})
    return Mixture(spec, ProviderRegistry().add("fake", fake))


async def test_layers_are_skipped_when_the_answers_agree() -> None:
    fake = FakeProvider(replies={"a": "2 + 2 is 4.", "b": "The answer is 4"})
    result = await mixture({"method": "answer"}, fake).arun("2+2?")
    assert len(result.layers) == 1
    assert len(fake.calls) == 3  # two proposers and the aggregator
    assert result.notes == (
        "early exit after layer 1: 2 of 2 answers are 4; skipped 2 proposer layer(s)",
    )
    # The aggregator still sees the agreeing answers.
    assert "The answer is 4" in fake.calls_for("agg")[0].messages[0].content


async def test_disagreeing_layers_all_run() -> None:
    fake = FakeProvider(replies={"a": "It is 4.", "b": "It is 5."})
    result = await mixture({"method": "answer"}, fake).arun("2+2?")
    assert len(result.layers) == 3
    assert result.notes == ()


async def test_no_early_exit_without_the_config() -> None:
    fake = FakeProvider(replies={"a": "4", "b": "4"})
    result = await mixture(None, fake).arun("2+2?")
    assert len(result.layers) == 3


async def test_similarity_method_exits_on_near_identical_texts() -> None:
    replies = {"a": ["Paris is the capital of France.", "x"], "b": "paris is the capital of france"}
    fake = FakeProvider(replies=replies)
    result = await mixture({"method": "similarity", "threshold": 0.8}, fake).arun("capital?")
    assert len(result.layers) == 1
    assert "mean similarity" in result.notes[0]


# Options that keep a strategy to the configured layers (no first layer of samples).
WITHOUT_SAMPLES: dict[str, dict[str, Any]] = {
    "self-moa": {"samples": None},
    "self-moa-seq": {"samples": None},
}


@pytest.mark.parametrize("strategy", strategy_names())
async def test_every_strategy_skips_the_layers_after_agreeing_answers(strategy: str) -> None:
    # Later layers and the final step would answer 5: only skipping them keeps the 4.
    fake = FakeProvider(
        replies={"p1a": "The answer is 4", "p1b": "2 + 2 = 4, so 4."},
        default="Best: 1\nStop: no\nThe answer is 5.",
    )
    spec = MixtureSpec.model_validate(
        {
            "layers": [
                [{"model": "fake:p1a"}, {"model": "fake:p1b"}],
                [{"model": "fake:p2a"}, {"model": "fake:p2b"}],
                [{"model": "fake:p3a"}, {"model": "fake:p3b"}],
            ],
            "aggregator": {"model": "fake:agg"},
            "early_exit": {"method": "answer"},
            "strategy": {"type": strategy, **WITHOUT_SAMPLES.get(strategy, {})},
        }
    )
    result = await Mixture(spec, ProviderRegistry().add("fake", fake)).arun("2+2?")
    later = [c.model for c in fake.calls if c.model[:2] in ("p2", "p3")]
    assert later == [], f"{strategy} ran layers 2-3 although layer 1 agreed"
    assert len(result.layers) == 1
    assert any(n.startswith("early exit after layer 1") for n in result.notes)


def test_agreement_threshold_is_a_share_of_the_answers() -> None:
    texts = ["so 12", "answer: 12", "I get 13"]
    assert agreement(texts, EarlyExitSpec(threshold=0.6))[0]
    assert not agreement(texts, EarlyExitSpec())[0]
    assert not agreement(["12"], EarlyExitSpec())[0]  # one answer is not agreement
    assert not agreement(["no numbers", "none here"], EarlyExitSpec())[0]


def test_similarity() -> None:
    assert similarity("a b c", "A  b c") == 1.0
    assert similarity("a b c d", "w x y z") == 0.0
    assert 0.4 < similarity("the cat sat on the mat", "the dog sat on the rug") < 0.8
