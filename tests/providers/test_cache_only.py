"""``cache_only``: a replay of the call cache that calls no model and stops at the first miss."""

from __future__ import annotations

from pathlib import Path

import pytest

from moa import Mixture, MixtureSpec
from moa.errors import CacheMissError, ConfigError, MissingAPIKeyError, ModelNotInstalledError
from moa.providers.cache import CachingRegistry, SQLiteCallStore, registry_with_cache
from moa.testing import FakeProvider

SPEC = MixtureSpec.model_validate(
    {
        "layers": [[{"model": "fake:a"}, {"model": "fake:b"}]],
        "aggregator": {"model": "fake:agg"},
    }
)
REPLIES = {"a": "alpha", "b": "beta", "agg": "final"}


def _registry(store: SQLiteCallStore, fake: FakeProvider, cache_only: bool) -> CachingRegistry:
    registry = CachingRegistry(store=store, cache_only=cache_only)
    registry.add("fake", fake)
    return registry


async def test_a_replay_answers_from_the_cache_without_calling_a_model(tmp_path: Path) -> None:
    store = SQLiteCallStore(tmp_path / "calls.sqlite")
    first = await Mixture(SPEC, _registry(store, FakeProvider(replies=REPLIES), False)).arun("q")
    fake = FakeProvider(replies=REPLIES)
    again = await Mixture(SPEC, _registry(store, fake, True)).arun("q")
    assert again.output == first.output == "final" and fake.calls == []
    assert [a.output for a in again.layers[0].agents] == ["alpha", "beta"]


async def test_a_miss_ends_the_run_instead_of_failing_one_agent(tmp_path: Path) -> None:
    store = SQLiteCallStore(tmp_path / "calls.sqlite")
    await Mixture(SPEC, _registry(store, FakeProvider(replies=REPLIES), False)).arun("q")
    fake = FakeProvider(replies=REPLIES)
    # Without cache_only a proposer's failure would leave the other carrying on; a replay
    # that carried on would report a run that never happened.
    with pytest.raises(CacheMissError, match=r"fake:a: a call the call cache .*calls\.sqlite"):
        await Mixture(SPEC, _registry(store, fake, True)).arun("another question")
    assert fake.calls == []


def test_a_replay_needs_no_installed_model_and_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOA_MODEL_DIR", str(tmp_path / "no-models"))
    monkeypatch.delenv("TOGETHER_API_KEY", raising=False)
    layers = [[{"model": "together:some/model"}]]
    spec = MixtureSpec.model_validate(
        {"layers": layers, "aggregator": {"model": "local:smollm2-135m"}}
    )
    store = SQLiteCallStore(tmp_path / "calls.sqlite")
    Mixture(spec, CachingRegistry(store=store, cache_only=True)).check()
    with pytest.raises(MissingAPIKeyError):
        Mixture(spec, CachingRegistry(store=store)).check()


def test_the_cache_passes_the_model_check_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run that calls models must say up front that one is not installed, cache or not.
    monkeypatch.setenv("MOA_MODEL_DIR", str(tmp_path / "no-models"))
    spec = MixtureSpec.model_validate({"aggregator": {"model": "local:smollm2-135m"}})
    registry = CachingRegistry(store=SQLiteCallStore(tmp_path / "calls.sqlite"))
    with pytest.raises(ModelNotInstalledError, match="moa models pull smollm2-135m"):
        Mixture(spec, registry).check()


def test_cache_only_without_a_cache_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="leave out --no-cache"):
        registry_with_cache({}, None, None, cache_only=True)
    assert not isinstance(registry_with_cache({}, None, None), CachingRegistry)
