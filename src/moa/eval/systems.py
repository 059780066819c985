"""The systems a run compares: what the user named, plus the automatic baselines.

A system is given as a preset name, a config file, or a single model id
(``provider:model``). Every mixture brings its models as baselines (each one
alone), and the best single model gets a Self-MoA: the same model sampled
``n`` times with distinct seeds, then aggregated by itself. A baseline that is
the same configuration as a system the user named is run once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from moa.config import MixtureConfig, load_config
from moa.engine.spec import AgentSpec, LayerSpec, MixtureSpec
from moa.errors import ConfigError
from moa.eval.prompts import PromptSet
from moa.providers.settings import LocalSettings, ProviderSettings

__all__ = [
    "JUDGE_SETTINGS",
    "GenerationSettings",
    "System",
    "judge_key",
    "judge_system",
    "merged_provider_settings",
    "proposer_baselines",
    "resolve_system",
    "self_moa_spec",
    "single_spec",
]

Origin = Literal["user", "baseline", "self-moa"]
_NOT_IDENTITY = {"name", "timeout", "retry", "deadline"}


@dataclass(frozen=True)
class GenerationSettings:
    """How single models and Self-MoA baselines are sampled (mixtures keep their own)."""

    max_tokens: int = 512
    temperature: float = 0.0
    seed: int = 0
    samples: int = 4
    """Self-MoA: how many answers the aggregator sees (the model's own answer included)."""
    sample_temperature: float = 0.7


@dataclass(frozen=True)
class System:
    """One configuration under test."""

    name: str
    spec: MixtureSpec
    origin: Origin = "user"
    source: str = ""
    """What the user wrote (preset, path or model id), or how the baseline was made."""
    config: MixtureConfig | None = field(default=None, compare=False)

    @property
    def single(self) -> bool:
        return not self.spec.layers and self.spec.strategy.type == "layered"

    @property
    def model(self) -> str | None:
        """The model id of a single-model system."""
        return self.spec.aggregator.model if self.single else None

    def identity(self) -> dict[str, Any]:
        """Everything that determines this system's answers.

        Its name and how long it may wait (timeouts, retries, deadline) are left
        out: changing them must not throw away answers already logged.
        """
        return self.spec.model_dump(mode="json", exclude=_NOT_IDENTITY)

    def with_timeout(self, seconds: float | None) -> System:
        """The same system with every call allowed ``seconds`` (``None``: unchanged)."""
        if seconds is None:
            return self
        spec = self.spec.model_copy(update={"timeout": seconds})
        return System(self.name, spec, self.origin, self.source, self.config)

    def key(self, context: Any = None) -> str:
        """A digest of :meth:`identity` and ``context`` (the task's prompts, the judge)."""
        text = json.dumps([self.identity(), context], sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "origin": self.origin,
            "source": self.source,
            "single": self.single,
            "layers": [[a.model for a in layer.agents] for layer in self.spec.layers],
            "aggregator": self.spec.aggregator.model,
            "strategy": self.spec.strategy.model_dump(mode="json"),
            "spec": self.spec.model_dump(mode="json", exclude_defaults=True),
        }


JUDGE_SETTINGS = GenerationSettings(temperature=0.0, max_tokens=1024, seed=0)
"""How a judge given as a model id samples (greedy, so its verdicts are reproducible)."""


def judge_system(text: str, timeout: float | None = None) -> System:
    """The judge ``--judge TEXT`` names, as ``moa eval`` and ``moa judge validate`` run it."""
    return resolve_system(text, JUDGE_SETTINGS).with_timeout(timeout)


def judge_key(judge: System, prompts: PromptSet, protocol: str = "pairwise") -> str:
    """What a judge's validation is valid for: its configuration, protocol and prompt.

    The same digest as :meth:`System.key`, so a judge whose model, sampling,
    protocol or prompt changed is a different judge (its name and timeouts do
    not count). A pairwise judge is keyed by its ``judge_pairwise`` prompt; a
    graded one by the protocol and its ``judge_single`` prompt.
    """
    if protocol == "pairwise":
        return judge.key({"judge_pairwise": prompts.get("judge_pairwise")})
    return judge.key({"judge_protocol": protocol, "judge_single": prompts.get("judge_single")})


def single_spec(model_id: str, settings: GenerationSettings) -> MixtureSpec:
    """One model answering alone."""
    agent = AgentSpec(
        model=model_id,
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
        seed=settings.seed,
    )
    return MixtureSpec(name=model_id, aggregator=agent)


def self_moa_spec(model_id: str, settings: GenerationSettings) -> MixtureSpec:
    """Self-MoA: the model's own answer and ``samples - 1`` samples, aggregated greedily by it.

    The first answer is the single model's (``temperature``, ``seed``), the
    others are sampled at ``sample_temperature`` with seeds ``seed+1..``, so the
    single-model baseline's call is one of the proposals and the aggregation
    starts from what the model alone would answer. ``moa select`` draws its
    Self-MoA the same way, so both share every call through the cache.
    """
    own = AgentSpec(
        model=model_id,
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
        seed=settings.seed,
    )
    samples = [
        own.model_copy(
            update={"temperature": settings.sample_temperature, "seed": settings.seed + n}
        )
        for n in range(1, settings.samples)
    ]
    aggregator = AgentSpec(
        model=model_id, temperature=0.0, max_tokens=settings.max_tokens, seed=settings.seed
    )
    return MixtureSpec(
        name=f"self-moa-{model_id.split(':', 1)[-1]}",
        layers=[LayerSpec(agents=[own, *samples])],
        aggregator=aggregator,
    )


def _looks_like_model_id(text: str) -> bool:
    if Path(text).suffix in (".yaml", ".yml", ".json") or Path(text).exists():
        return False
    provider, sep, model = text.partition(":")
    return bool(sep and provider and model) and "/" not in provider


def resolve_system(text: str, settings: GenerationSettings) -> System:
    """A system from a preset name, a config file path or a ``provider:model`` id."""
    if _looks_like_model_id(text):
        return System(text, single_spec(text, settings), "user", text)
    config = load_config(text)
    spec = config.spec()
    return System(spec.name, spec, "user", text, config)


def proposer_baselines(systems: Sequence[System], settings: GenerationSettings) -> list[System]:
    """Each distinct model of the mixtures, alone (its proposers and its aggregator)."""
    seen: dict[str, None] = {}
    for system in systems:
        if not system.single:
            for model_id in system.spec.model_ids():
                seen.setdefault(model_id, None)
    return [
        System(
            model_id,
            single_spec(model_id, settings),
            "baseline",
            f"a model of {_owners(systems, model_id)}",
        )
        for model_id in seen
    ]


def _owners(systems: Sequence[System], model_id: str) -> str:
    return ", ".join(s.name for s in systems if not s.single and model_id in s.spec.model_ids())


def merged_provider_settings(
    configs: Sequence[MixtureConfig],
) -> tuple[dict[str, ProviderSettings], LocalSettings]:
    """One set of provider settings for every system, so each model is loaded once.

    Two configs that define the same provider differently cannot share it: that is an error.
    """
    providers: dict[str, ProviderSettings] = {}
    local: LocalSettings | None = None
    for config in configs:
        for name, settings in config.providers.items():
            if name in providers and providers[name] != settings:
                raise ConfigError(
                    f"two systems define provider {name!r} differently; give it one definition "
                    "(or a different name in one of the configs)"
                )
            providers[name] = settings
        if "local" in config.model_fields_set:
            local = _merged_local(local, config.local)
    return providers, local or LocalSettings()


def _merged_local(first: LocalSettings | None, second: LocalSettings) -> LocalSettings:
    """Two systems' ``local:`` settings as one; they may differ only in the batch width.

    A batch width says how calls are run, not what they answer, so the widest serves
    both. Anything else (threads, window, model folder) changes the loaded model.
    """
    if first is None:
        return second
    widest = max(first.batch, second.batch)
    if first.model_copy(update={"batch": widest}) != second.model_copy(update={"batch": widest}):
        raise ConfigError(
            "two systems have different 'local:' settings; one run loads each local "
            "model once, so give them the same settings (only batch may differ: the "
            "widest is used)"
        )
    return first.model_copy(update={"batch": widest})


def unique(systems: Sequence[System]) -> list[System]:
    """Drop repeated configurations (first one wins) and make the names distinct."""
    out: list[System] = []
    identities: list[dict[str, Any]] = []
    names: set[str] = set()
    for system in systems:
        identity = system.identity()
        if identity in identities:
            continue
        identities.append(identity)
        name, n = system.name, 2
        while name in names:
            name, n = f"{system.name}-{n}", n + 1
        names.add(name)
        out.append(system if name == system.name else _renamed(system, name))
    return out


def _renamed(system: System, name: str) -> System:
    return System(name, system.spec, system.origin, system.source, system.config)
