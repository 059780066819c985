"""docs/strategies.md against the code: every config example is valid and runs (over a
fake ``local``), and every option of every strategy is in an options table with its default."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from moa.config import build_mixture, parse_config
from moa.engine.strategy import get_strategy, strategy_names
from moa.errors import CacheMissError
from moa.providers.cache import CachingRegistry, SQLiteCallStore
from moa.providers.registry import ProviderRegistry
from moa.strategies.common import StrategyOptions
from moa.strategies.window import ContextPolicy
from moa.testing import FakeProvider

DOC = Path(__file__).resolve().parents[2] / "docs" / "strategies.md"
SHARED = "Options the strategies share"
CONTEXT = "Context safety"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def section(title: str) -> str:
    """The text under the ``## title`` heading, up to the next one ('' without it)."""
    parts = DOC.read_text().split(f"\n## {title}\n", 1)
    return parts[1].split("\n## ", 1)[0] if len(parts) == 2 else ""


def option_rows(title: str) -> dict[str, str]:
    """``{option: its default cell}`` from the option tables of a section."""
    return dict(re.findall(r"^\| `(\w+)` \| ([^|]*) \|", section(title), flags=re.M))


def table_of(strategy: str, option: str) -> str:
    """The section whose table documents ``option`` of ``strategy``: the shared table,
    unless the strategy has an option of its own by that name or another default."""
    model = get_strategy(strategy).options
    if issubclass(model, StrategyOptions) and option in StrategyOptions.model_fields:
        own, shared = model.model_fields[option], StrategyOptions.model_fields[option]
        if (own.default, own.default_factory) == (shared.default, shared.default_factory):
            return SHARED
    return strategy


def check_row(title: str, option: str, field: FieldInfo) -> None:
    rows = option_rows(title)
    assert option in rows, f"docs/strategies.md: the table of '{title}' lacks `{option}`"
    default = field.default
    # None and computed defaults are told in words; a literal one must be shown as it is.
    if isinstance(default, bool | int | float | str):
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        cell = rows[option]
        assert shown in re.findall(r"[\w.]+", cell), (
            f"docs/strategies.md: '{title}' gives {cell.strip()!r} as the default of "
            f"`{option}`, the code {shown}"
        )


def no_unknown_options(title: str, model: type[BaseModel]) -> None:
    listed = set(option_rows(title))
    unknown = listed - set(model.model_fields)
    assert not unknown, f"docs/strategies.md: '{title}' lists options that do not exist: {unknown}"


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


@pytest.mark.parametrize("strategy", strategy_names())
def test_every_option_of_every_strategy_is_in_an_options_table(strategy: str) -> None:
    model = get_strategy(strategy).options
    assert section(strategy), f"docs/strategies.md has no '## {strategy}' section"
    for option, field in model.model_fields.items():
        check_row(table_of(strategy, option), option, field)
    no_unknown_options(strategy, model)


def test_the_shared_and_the_context_tables_match_their_models() -> None:
    for title, model in ((SHARED, StrategyOptions), (CONTEXT, ContextPolicy)):
        for option, field in model.model_fields.items():
            check_row(title, option, field)
        no_unknown_options(title, model)


def test_the_chunked_entry_links_the_latency_page() -> None:
    assert "(latency.md#chunk-wise-aggregation-strategy-chunked)" in section("chunked")
    latency = (DOC.parent / "latency.md").read_text()
    assert "## Chunk-wise aggregation (`strategy: chunked`)" in latency


@pytest.mark.parametrize("block", blocks("python"))
def test_python_example_runs(block: str) -> None:
    exec(compile(block, str(DOC), "exec"), {})


@pytest.mark.parametrize("block", blocks("yaml"))
async def test_a_cache_only_replay_short_of_a_call_ends_with_the_miss(
    block: str, tmp_path: Path
) -> None:
    """Whatever the strategy, a replay's missing call ends the run: never a hang, never a
    failed agent that the others carry on without."""
    config = parse_config(yaml.safe_load(block), "docs/strategies.md")
    fake = FakeProvider("local", default="Best: 1\nStop: no\nThe answer is 4.")
    registry = CachingRegistry(store=SQLiteCallStore(tmp_path / "calls.sqlite"), cache_only=True)
    registry.add("local", fake)
    with pytest.raises(CacheMissError):
        await asyncio.wait_for(build_mixture(config, registry).arun("2+2?"), timeout=30)
    assert fake.calls == []
