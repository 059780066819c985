"""Self-MoA-Seq and a vote end to end with the real SmolLM2-135M."""

from __future__ import annotations

import pytest

from moa import Mixture, MixtureSpec, ProviderRegistry, TextDelta
from moa.providers.catalog import CATALOG, model_dir
from moa.providers.settings import LocalSettings

pytestmark = pytest.mark.slow

SMOL = {"model": "local:smollm2-135m", "max_tokens": 24}


def local_mixture(strategy: dict[str, object]) -> Mixture:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    path = model_dir() / CATALOG["smollm2-135m"].filename
    if not path.is_file():
        pytest.skip(f"SmolLM2-135M is not at {path}; run: moa models pull smollm2-135m")
    spec = {"aggregator": SMOL, "retry": {"max_attempts": 1}, "strategy": strategy}
    return Mixture(MixtureSpec.model_validate(spec), ProviderRegistry(local=LocalSettings()))


async def test_self_moa_seq_with_a_real_model() -> None:
    mixture = local_mixture({"type": "self-moa-seq", "samples": 3, "window": 2, "model": SMOL})
    try:
        events = [e async for e in mixture.astream("Name a colour of the rainbow.")]
    finally:
        await mixture.providers.aclose()
    result = events[-1].result  # type: ignore[union-attr]
    assert result.output.strip()
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == result.output
    assert len(result.layers[0].agents) == 3 and len(result.extra_calls) == 1
    assert all(call.ok for call in result.calls())
    assert result.usage.calls == 5


async def test_vote_with_a_real_model() -> None:
    mixture = local_mixture({"type": "vote", "samples": 3, "greedy_first": True, "model": SMOL})
    try:
        result = await mixture.arun("What is 2 + 2? Answer with a number.")
    finally:
        await mixture.providers.aclose()
    assert result.output.strip()
    assert any(note.startswith("vote over 3 answers") for note in result.notes)
