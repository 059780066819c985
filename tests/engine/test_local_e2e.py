"""End to end on the real SmolLM2-135M: a two-layer mixture through the local provider."""

from __future__ import annotations

import pytest

from moa import Done, Mixture, MixtureSpec, ProviderRegistry, TextDelta
from moa.providers.catalog import CATALOG, model_dir
from moa.providers.settings import LocalSettings
from moa.types import Usage

pytestmark = pytest.mark.slow

SPEC = {
    "name": "smol-2x2",
    "defaults": {"max_tokens": 40, "temperature": 0.7},
    "layers": [
        [{"model": "local:smollm2-135m", "seed": 1}, {"model": "local:smollm2-135m", "seed": 2}],
        [{"model": "local:smollm2-135m", "seed": 3}, {"model": "local:smollm2-135m", "seed": 4}],
    ],
    "aggregator": {"model": "local:smollm2-135m", "temperature": 0.2, "seed": 5},
    "retry": {"max_attempts": 1},
}


@pytest.fixture
def mixture() -> Mixture:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    path = model_dir() / CATALOG["smollm2-135m"].filename
    if not path.is_file():
        pytest.skip(f"SmolLM2-135M is not at {path}; run: moa models pull smollm2-135m")
    registry = ProviderRegistry(local=LocalSettings(n_ctx=4096))
    return Mixture(MixtureSpec.model_validate(SPEC), registry)


async def test_a_two_layer_local_mixture_answers_with_a_complete_result(
    mixture: Mixture,
) -> None:
    deltas: list[str] = []
    try:
        async for event in mixture.astream("Name three colours of the rainbow."):
            if isinstance(event, TextDelta):
                deltas.append(event.text)
            elif isinstance(event, Done):
                result = event.result
    finally:
        await mixture.providers.aclose()

    assert result.output.strip()
    assert "".join(deltas) == result.output
    assert [len(layer.agents) for layer in result.layers] == [2, 2]
    calls = list(result.calls())
    assert len(calls) == 5
    for call in calls:
        assert call.ok, call.error
        assert call.output and call.output.strip()
        assert call.model == "local:smollm2-135m"
        assert call.usage.calls == 1
        assert call.usage.prompt_tokens > 0
        assert 0 < call.usage.completion_tokens <= 40
        assert call.latency_s > 0
    assert result.aggregator.role == "aggregator"
    assert result.aggregator.output == result.output
    assert result.usage == Usage.sum(call.usage for call in calls)
    assert result.usage.calls == 5
    # Layer 2 and the aggregator read every answer of the layer before them.
    first, second = result.layers
    assert min(a.usage.prompt_tokens for a in second.agents) > max(
        a.usage.prompt_tokens for a in first.agents
    )
    assert result.aggregator.usage.prompt_tokens > max(a.usage.prompt_tokens for a in first.agents)
    document = result.to_dict()
    assert document["usage"]["calls"] == 5
    assert document["aggregator"]["output"] == result.output
