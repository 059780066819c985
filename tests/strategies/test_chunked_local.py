"""Chunk-wise aggregation end to end with the real SmolLM2-135M (continue_final in llama.cpp)."""

from __future__ import annotations

import pytest

from moa import Done, Mixture, MixtureSpec, ProviderRegistry, TextDelta
from moa.providers.catalog import CATALOG, model_dir
from moa.providers.local import LocalProvider
from moa.providers.settings import LocalSettings


@pytest.fixture(scope="module")
def registry() -> ProviderRegistry:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    path = model_dir() / CATALOG["smollm2-135m"].filename
    if not path.is_file():
        pytest.skip(f"SmolLM2-135M is not at {path}; run: moa models pull smollm2-135m")
    local = LocalProvider(settings=LocalSettings(n_ctx=2048))
    return ProviderRegistry().add("local", local)


@pytest.mark.slow
async def test_chunk_wise_answer_with_a_real_model(registry: ProviderRegistry) -> None:
    spec = MixtureSpec.model_validate(
        {
            "layers": [[{"model": "local:smollm2-135m", "max_tokens": 48}]],
            "aggregator": {"model": "local:smollm2-135m", "max_tokens": 24},
            "defaults": {"temperature": 0.0},
            "strategy": {"type": "chunked", "chunk_tokens": 4},
        }
    )
    mixture = Mixture(spec, registry)
    events = [e async for e in mixture.astream("Name three colours of the rainbow.")]
    done = events[-1]
    assert isinstance(done, Done)
    result = done.result
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert result.output.strip() and streamed == result.output
    # One model serves one generation at a time, so the first chunk waits for the proposer;
    # then the answer is continued from it. Every call and token is counted.
    assert result.aggregator.usage.calls >= 2
    assert 0 < result.aggregator.usage.completion_tokens <= 24
    assert "chunk-wise" in result.aggregator.notes[0]
    assert result.layers[0].agents[0].output
