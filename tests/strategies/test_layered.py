"""The default strategy, and its ``context:`` block (the same policy the other strategies take)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from moa import ConfigError
from moa.config import build_mixture, load_config, parse_config
from moa.providers.registry import ProviderRegistry
from moa.strategies.layered import LayeredOptions
from moa.strategies.window import ContextPolicy
from moa.testing import FakeProvider, FunctionProvider
from moa.types import CompletionRequest, estimate_tokens

LONG = "start " + "x" * 4000 + " conclusion 42"
CONFIG = """
layers:
  - [{model: "fake:a"}, {model: "fake:b"}, {model: "fake:c"}]
aggregator: {model: "fake:agg", max_tokens: 100}
strategy:
  type: layered
  context: {windows: {"fake:agg": 1200}, overflow: OVERFLOW}
"""


def prompt_tokens(request: CompletionRequest) -> int:
    return sum(estimate_tokens(m.content) + 4 for m in request.messages)


def system(request: CompletionRequest) -> str:
    return request.messages[0].content if request.messages[0].role == "system" else ""


def config_file(tmp_path: Path, overflow: str) -> Path:
    path = tmp_path / "layered.yaml"
    path.write_text(CONFIG.replace("OVERFLOW", overflow))
    return path


def test_the_yaml_context_block_is_the_shared_policy(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, "sliding"))
    options = config.strategy.options()
    assert isinstance(options, LayeredOptions)
    assert options.context == ContextPolicy(windows={"fake:agg": 1200}, overflow="sliding")


@pytest.mark.parametrize(
    "strategy",
    [
        {"type": "layered", "context": {"overflow": "shrink"}},
        {"type": "layered", "context": {"windw": 2048}},
        {"type": "layered", "samples": 3},
    ],
)
def test_bad_layered_options_are_config_errors(strategy: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        parse_config({"aggregator": {"model": "fake:m"}, "strategy": strategy})


async def test_overflowing_references_are_truncated_for_the_aggregator(tmp_path: Path) -> None:
    fake = FakeProvider(replies={"a": LONG, "b": LONG, "c": "short answer"})
    mixture = build_mixture(
        load_config(config_file(tmp_path, "truncate")), ProviderRegistry().add("fake", fake)
    )
    result = await mixture.arun("q")
    (prompt,) = fake.calls_for("agg")
    assert prompt_tokens(prompt) + 100 <= 1200
    seen = system(prompt)
    assert "short answer" in seen and seen.count("conclusion 42") == 2
    assert "characters left out" in seen
    assert any("truncated to fit its context window of 1200" in n for n in result.notes)


async def test_overflow_switches_to_a_sliding_window(tmp_path: Path) -> None:
    prompts: list[int] = []

    def reply(request: CompletionRequest) -> str:
        if request.model == "agg":
            prompts.append(prompt_tokens(request))
            return f"synthesis {len(prompts)}"
        return "y" * 1600

    mixture = build_mixture(
        load_config(config_file(tmp_path, "sliding")),
        ProviderRegistry().add("fake", FunctionProvider(reply)),
    )
    result = await mixture.arun("q")
    assert len(prompts) >= 2
    assert all(p + 100 <= 1200 for p in prompts)
    assert result.output == f"synthesis {len(prompts)}"
    assert len(result.extra_calls) == len(prompts) - 1
    assert any("aggregated with a sliding window" in n for n in result.notes)


async def test_a_refining_layer_with_a_small_window_gets_truncated_references(build: Any) -> None:
    fake = FakeProvider(replies={"a": LONG, "b": LONG})
    spec = {
        "layers": [[{"model": "fake:a"}, {"model": "fake:b"}], [{"model": "fake:r"}]],
        "aggregator": {"model": "fake:agg"},
        "strategy": {"type": "layered", "context": {"windows": {"fake:r": 1000}}},
    }
    result = await build(spec, fake).arun("q")
    (prompt,) = fake.calls_for("r")
    assert prompt_tokens(prompt) + 512 <= 1000  # the reserve defaults to 512 tokens
    assert "characters left out" in system(prompt)
    assert any(n.startswith("layer 2: references for fake:r truncated") for n in result.notes)
    # The aggregator has no known window: it sees the refiner's answer as it is.
    assert not any("fake:agg" in n for n in result.notes)


async def test_without_a_context_block_nothing_is_cut(build: Any) -> None:
    fake = FakeProvider(replies={"a": LONG * 10})
    spec = {"layers": [[{"model": "fake:a"}]], "aggregator": {"model": "fake:agg"}}
    result = await build(spec, fake).arun("q")
    assert LONG * 10 in system(fake.calls_for("agg")[0])
    assert result.notes == ()
