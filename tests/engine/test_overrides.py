from __future__ import annotations

import pytest

from moa import Mixture, MixtureSpec, ProviderRegistry
from moa.engine.overrides import RunOverrides
from moa.errors import ConfigError
from moa.testing import FakeProvider

SPEC = {
    "layers": [
        [{"model": "fake:a"}, {"model": "fake:b"}, {"model": "fake:c"}],
        {"agents": [{"model": "fake:a"}, {"model": "fake:b"}], "min_ok": 2},
    ],
    "aggregator": {"model": "fake:agg"},
}


def mixture(fake: FakeProvider) -> Mixture:
    return Mixture(MixtureSpec.model_validate(SPEC), ProviderRegistry().add("fake", fake))


def test_overrides_change_how_not_who() -> None:
    base = MixtureSpec.model_validate(SPEC)
    spec = RunOverrides.model_validate(
        {"strategy": {"type": "chunked", "chunk_tokens": 8}, "quorum": 2, "layer_deadline": 3}
    ).apply(base)
    assert spec.strategy.type == "chunked"
    assert spec.strategy.options().model_dump()["chunk_tokens"] == 8
    assert [layer.quorum for layer in spec.layers] == [2, 2]
    assert [layer.deadline for layer in spec.layers] == [3, 3]
    assert spec.model_ids() == base.model_ids()
    assert base.layers[0].quorum is None  # the original is untouched


def test_quorum_is_kept_within_each_layer() -> None:
    spec = RunOverrides(quorum=1).apply(MixtureSpec.model_validate(SPEC))
    assert [layer.quorum for layer in spec.layers] == [1, 2]  # the second layer needs min_ok=2


def test_bad_overrides_name_the_field() -> None:
    fake = FakeProvider()
    with pytest.raises(ConfigError, match="layers"):
        mixture(fake).variant({"layers": []})
    with pytest.raises(ConfigError, match="unknown strategy 'nope'"):
        mixture(fake).variant({"strategy": {"type": "nope"}})
    with pytest.raises(ConfigError, match="strategy"):
        mixture(fake).variant({"strategy": {"type": "chunked", "chunk_tokens": 0}})


async def test_a_variant_runs_the_chosen_mode_and_shares_history() -> None:
    fake = FakeProvider(delay={"c": 5.0})
    base = mixture(fake)
    fast = base.variant({"quorum": 2, "early_exit": {"method": "similarity", "threshold": 0.1}})
    result = await fast.arun("q")
    assert fake.cancelled == 1
    assert len(result.layers) == 1 and "early exit" in result.notes[0]
    assert fast.latency is base.latency and fast.providers is base.providers
    assert base.spec.layers[0].quorum is None
