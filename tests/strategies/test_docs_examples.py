"""Every config example of docs/strategies.md is valid and runs (over a fake ``local``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from moa.config import build_mixture, parse_config
from moa.engine.strategy import strategy_names
from moa.providers.registry import ProviderRegistry
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
    ours = {
        "self-moa",
        "self-moa-seq",
        "roles",
        "reaggregate",
        "rank",
        "sparse",
        "critique",
        "vote",
    }
    assert ours <= set(strategy_names())
    assert ours <= shown


@pytest.mark.parametrize("block", blocks("python"))
def test_python_example_runs(block: str) -> None:
    exec(compile(block, str(DOC), "exec"), {})
