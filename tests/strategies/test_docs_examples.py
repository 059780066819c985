"""Every config example of docs/strategies.md is valid and runs (over a fake ``local``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from moa.config import build_mixture, parse_config
from moa.engine.strategy import strategy_names
from moa.providers.registry import ProviderRegistry
from moa.strategies.chunked import ChunkedOptions
from moa.testing import FakeProvider

DOC = Path(__file__).resolve().parents[2] / "docs" / "strategies.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.parametrize("block", blocks("yaml"))
async def test_config_example_runs(block: str) -> None:
    config = parse_config(yaml.safe_load(block), "docs/strategies.md")
    fake = FakeProvider("local", default="Best: 1\nStop: no\nThe answer is 4.")
    result = await build_mixture(config, ProviderRegistry().add("local", fake)).arun("2+2?")
    assert result.output
    assert fake.calls


def test_every_strategy_has_an_example() -> None:
    shown = {yaml.safe_load(b)["strategy"]["type"] for b in blocks("yaml")}
    assert set(strategy_names()) <= shown


def test_the_chunked_entry_names_every_option_and_links_the_latency_page() -> None:
    entry = DOC.read_text().split("\n## chunked\n", 1)[1].split("\n## ", 1)[0]
    for option in ChunkedOptions.model_fields:
        assert f"`{option}`" in entry, f"docs/strategies.md: chunked lacks {option}"
    assert "(latency.md#chunk-wise-aggregation-strategy-chunked)" in entry
    latency = (DOC.parent / "latency.md").read_text()
    assert "## Chunk-wise aggregation (`strategy: chunked`)" in latency


@pytest.mark.parametrize("block", blocks("python"))
def test_python_example_runs(block: str) -> None:
    exec(compile(block, str(DOC), "exec"), {})
