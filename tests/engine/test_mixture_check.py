"""``Mixture.check``: what stops a mixture before its first call, asked without making one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from moa import Mixture, MixtureSpec, ProviderRegistry
from moa.engine import strategy as strategy_registry
from moa.engine.context import RunContext
from moa.engine.result import AgentResult
from moa.engine.strategy import Strategy, get_strategy, register_strategy, strategy_names
from moa.errors import (
    ConfigError,
    FeatureUnavailableError,
    MissingAPIKeyError,
    ModelNotInstalledError,
)
from moa.providers.catalog import CATALOG
from moa.providers.settings import ProviderSettings
from moa.strategies.chunked import require_continue
from moa.testing import FakeProvider

PICKY = "picky-test"


class Asked:
    """What the requirement was shown, and whether it lets the mixture run."""

    def __init__(self) -> None:
        self.satisfied = False
        self.seen: list[tuple[MixtureSpec, ProviderRegistry]] = []

    def __call__(self, spec: MixtureSpec, providers: ProviderRegistry) -> None:
        self.seen.append((spec, providers))
        if not self.satisfied:
            raise FeatureUnavailableError(
                f"strategy {PICKY!r} needs a judge; add one or choose strategy 'layered'",
                provider="fake",
            )


@pytest.fixture
def picky() -> Iterator[Asked]:
    """A strategy whose requirement fails until told otherwise; it answers like ``layered``."""
    asked = Asked()
    layered = get_strategy("layered")

    def build(options: object) -> Strategy:
        run = layered.build(layered.options())

        async def strategy(ctx: RunContext) -> AgentResult:
            return await run(ctx)

        return strategy

    strategy_names()  # the built-ins first, so that removing ours below leaves them
    register_strategy(PICKY, build, requires=asked)
    yield asked
    del strategy_registry._REGISTRY[PICKY]


def spec(strategy: str, aggregator: str = "fake:agg") -> MixtureSpec:
    return MixtureSpec.model_validate(
        {
            "layers": [[{"model": "fake:a"}, {"model": "fake:b"}]],
            "aggregator": {"model": aggregator},
            "strategy": {"type": strategy},
        }
    )


async def test_a_strategy_requirement_stops_the_mixture_before_any_call(picky: Asked) -> None:
    fake = FakeProvider()
    registry = ProviderRegistry().add("fake", fake)
    mixture = Mixture(spec(PICKY), registry)
    with pytest.raises(FeatureUnavailableError, match="needs a judge"):
        mixture.check()
    [(seen_spec, seen_providers)] = picky.seen
    assert seen_spec is mixture.spec and seen_providers is registry
    with pytest.raises(FeatureUnavailableError, match="needs a judge"):
        await mixture.arun("hi")
    assert fake.calls == []
    picky.satisfied = True
    mixture.check()
    assert (await mixture.arun("hi")).output == "answer from agg"


async def test_a_variant_is_checked_for_the_strategy_it_runs(picky: Asked) -> None:
    fake = FakeProvider()
    mixture = Mixture(spec("layered"), ProviderRegistry().add("fake", fake))
    mixture.check()
    assert picky.seen == []
    variant = mixture.variant({"strategy": {"type": PICKY}})
    with pytest.raises(FeatureUnavailableError):
        variant.check()
    assert picky.seen[0][0] is variant.spec
    assert fake.calls == []


def test_a_missing_key_is_reported_before_the_strategy_is_asked(
    picky: Asked, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KEYED_TEST_KEY", raising=False)
    settings = {
        "keyed": ProviderSettings(base_url="http://127.0.0.1:9", api_key_env="KEYED_TEST_KEY")
    }
    registry = ProviderRegistry(settings).add("fake", FakeProvider())
    with pytest.raises(MissingAPIKeyError, match="KEYED_TEST_KEY"):
        Mixture(spec(PICKY, aggregator="keyed:agg"), registry).check()
    assert picky.seen == []


def test_chunked_registers_its_continuation_requirement() -> None:
    assert get_strategy("chunked").requires is require_continue
    assert get_strategy("layered").requires is None

    class Plain(FakeProvider):
        supports_continue = False

    plain = Plain("plain")
    registry = ProviderRegistry().add("fake", FakeProvider()).add("plain", plain)
    with pytest.raises(FeatureUnavailableError) as caught:
        Mixture(spec("chunked", aggregator="plain:agg"), registry).check()
    assert "'chunked'" in str(caught.value) and "supports_continue" in str(caught.value)
    assert caught.value.provider == "plain" and caught.value.model == "agg"
    Mixture(spec("chunked"), registry).check()  # FakeProvider can continue
    Mixture(spec("layered", aggregator="plain:agg"), registry).check()
    assert plain.calls == []


# --- local models: installed or not, told without loading them --------------------------------


@pytest.fixture
def models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty model directory; loading any model there is a test failure."""

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("Mixture.check loaded a model")

    monkeypatch.setenv("MOA_MODEL_DIR", str(tmp_path))
    monkeypatch.setattr("moa.providers.local.LocalModel", no_loading)
    return tmp_path


def with_local(model: str) -> MixtureSpec:
    return MixtureSpec.model_validate(
        {"layers": [[{"model": model}, {"model": "fake:a"}]], "aggregator": {"model": "fake:agg"}}
    )


async def test_a_local_model_that_is_not_installed_stops_the_mixture(models: Path) -> None:
    fake = FakeProvider()
    mixture = Mixture(with_local("local:smollm2-135m"), ProviderRegistry().add("fake", fake))
    with pytest.raises(ModelNotInstalledError) as caught:
        mixture.check()
    assert str(caught.value) == (
        "local model 'smollm2-135m' is not installed; run: moa models pull smollm2-135m"
    )
    with pytest.raises(ModelNotInstalledError):
        await mixture.arun("hi")
    assert fake.calls == []
    # Present is enough: the file is neither hashed (this one would not match) nor loaded.
    (models / CATALOG["smollm2-135m"].filename).write_bytes(b"not a model")
    mixture.check()


def test_a_local_model_path_must_name_a_file(models: Path) -> None:
    absent = models / "mine.gguf"
    mixture = Mixture(with_local(f"local:{absent}"), ProviderRegistry().add("fake", FakeProvider()))
    with pytest.raises(ConfigError, match="does not exist"):
        mixture.check()
    absent.write_bytes(b"GGUF")
    mixture.check()


def test_a_nested_mixture_is_checked_through_its_provider(models: Path) -> None:
    inner = Mixture(
        with_local("local:smollm2-135m"), ProviderRegistry().add("fake", FakeProvider())
    )
    registry = ProviderRegistry().add("fake", FakeProvider()).add("inner", inner.as_provider())
    outer = Mixture(with_local("inner:any"), registry)
    with pytest.raises(ModelNotInstalledError, match="moa models pull smollm2-135m"):
        outer.check()


def test_every_missing_local_model_is_told_with_one_command(models: Path) -> None:
    spec = MixtureSpec.model_validate(
        {
            "layers": [[{"model": "local:qwen2.5-coder-0.5b"}, {"model": "local:smollm2-135m"}]],
            "aggregator": {"model": "local:qwen2.5-coder-0.5b"},
        }
    )
    mixture = Mixture(spec, ProviderRegistry())
    with pytest.raises(ModelNotInstalledError) as caught:
        mixture.check()
    assert caught.value.models == ("qwen2.5-coder-0.5b", "smollm2-135m")
    assert str(caught.value) == (
        "local models 'qwen2.5-coder-0.5b', 'smollm2-135m' are not installed; "
        "run: moa models pull qwen2.5-coder-0.5b smollm2-135m"
    )
    (models / CATALOG["smollm2-135m"].filename).write_bytes(b"not a model")
    with pytest.raises(ModelNotInstalledError, match=r"model 'qwen2.5-coder-0.5b' is not"):
        mixture.check()


@pytest.mark.parametrize(
    "strategy",
    [
        {"type": "self-moa", "samples": 2, "model": {"model": "local:smollm2-135m"}},
        {"type": "critique", "critic": {"model": "local:smollm2-135m"}},
        {"type": "rank", "judge": {"model": "local:smollm2-135m"}},
        {"type": "sparse", "judge": {"model": "local:smollm2-135m"}},
        {"type": "reaggregate", "aggregators": [{"model": "local:smollm2-135m"}]},
    ],
    ids=lambda s: s["type"],
)
def test_the_models_a_strategy_names_are_checked_too(
    models: Path, strategy: dict[str, object]
) -> None:
    spec = MixtureSpec.model_validate(
        {
            "layers": [[{"model": "fake:a"}]],
            "aggregator": {"model": "fake:agg"},
            "strategy": strategy,
        }
    )
    assert spec.model_ids() == ["fake:a", "fake:agg", "local:smollm2-135m"]
    mixture = Mixture(spec, ProviderRegistry().add("fake", FakeProvider()))
    with pytest.raises(ModelNotInstalledError, match="moa models pull smollm2-135m"):
        mixture.check()
