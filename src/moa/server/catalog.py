"""The mixtures a server offers, by name, and plain ``provider:model`` pass-through.

Names come from the shipped presets, then every ``*.yaml``/``*.yml`` file of a
config directory (named by its ``name:`` or else its file stem; a file may
replace a preset of the same name), then mixtures handed over in code (tests,
embedding applications). A registry given as ``providers`` serves the config
files and pass-through ids (presets keep their own). A model id such as
``openai:gpt-4o-mini`` that names no mixture is answered by that one model, when
pass-through is allowed.

A mixture is *available* when it can start here, as :meth:`Mixture.check
<moa.engine.mixture.Mixture.check>` decides before any upstream call: every
model id resolves (its provider is known and the provider's key is set), every
local model it names is installed, and its providers can do what its strategy
requires. The server asks it for
``/v1/models``, at startup and for every request.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from moa.config import build_mixture, load_config, preset_names
from moa.engine.mixture import Mixture
from moa.engine.spec import AgentSpec, MixtureSpec
from moa.errors import ConfigError, MoAError
from moa.providers.registry import ProviderRegistry, split_model_id
from moa.server.errors import APIError

__all__ = ["MixtureCatalog"]


class MixtureCatalog:
    """Mixtures by name; see the module docstring for where they come from."""

    def __init__(
        self,
        mixtures: Mapping[str, Mixture],
        *,
        passthrough: ProviderRegistry | None = None,
        passthrough_models: Sequence[str] = (),
    ) -> None:
        self._mixtures = dict(mixtures)
        self._passthrough = passthrough
        self._allowed = tuple(passthrough_models)
        self.created = int(time.time())

    @classmethod
    def load(
        cls,
        *,
        config_dir: Path | None = None,
        include_presets: bool = True,
        mixtures: Mapping[str, Mixture] | None = None,
        providers: ProviderRegistry | None = None,
        allow_passthrough: bool = True,
        passthrough_models: Sequence[str] = (),
    ) -> MixtureCatalog:
        """Build the catalog; a broken config file is a :class:`ConfigError` naming it."""
        found: dict[str, Mixture] = {}
        if include_presets:
            for name in preset_names():
                found[name] = build_mixture(load_config(name))
        if config_dir is not None:
            found.update(_from_directory(config_dir, providers))
        found.update(mixtures or {})
        passthrough = (providers or ProviderRegistry()) if allow_passthrough else None
        return cls(found, passthrough=passthrough, passthrough_models=passthrough_models)

    def names(self) -> list[str]:
        return sorted(self._mixtures)

    def __contains__(self, name: str) -> bool:
        return name in self._mixtures

    def get(self, name: str) -> Mixture:
        """The mixture called ``name``, or a single-model mixture for a ``provider:model`` id."""
        mixture = self._mixtures.get(name)
        if mixture is not None:
            return mixture
        if self._passthrough is not None and ":" in name and self._passes(name):
            try:
                provider, _ = split_model_id(name)
            except ConfigError:
                provider = ""
            if provider in self._passthrough.names():
                spec = MixtureSpec(name=name, aggregator=AgentSpec(model=name))
                return Mixture(spec, self._passthrough)
        hint = ""
        if self._passthrough is not None:
            allowed = f" matching {', '.join(self._allowed)}" if self._allowed else ""
            hint = f" or a provider:model id{allowed}"
        raise APIError(
            404,
            f"the model {name!r} does not exist: use one of {', '.join(self.names())}{hint} "
            "(GET /v1/models lists them)",
            param="model",
            code="model_not_found",
        )

    def _passes(self, model_id: str) -> bool:
        return not self._allowed or any(fnmatchcase(model_id, p) for p in self._allowed)

    def problem(self, name: str) -> str | None:
        """Why the mixture ``name`` cannot run here, or None when it can."""
        try:
            self._mixtures[name].check()
        except MoAError as exc:
            return str(exc)
        return None

    def describe(self, name: str) -> dict[str, Any]:
        """The OpenAI model object of a mixture, with its shape under ``moa``.

        ``available`` is false, with the reason as ``problem``, when it cannot run here
        (typically a provider whose API key is not set on the server, or a local
        model that is not installed).
        """
        spec = self._mixtures[name].spec
        problem = self.problem(name)
        return {
            "id": name,
            "object": "model",
            "created": self.created,
            "owned_by": "moa",
            "moa": {
                "layers": [[agent.model for agent in layer.agents] for layer in spec.layers],
                "aggregator": spec.aggregator.model,
                "strategy": getattr(getattr(spec, "strategy", None), "type", "layered"),
                "available": problem is None,
                "problem": problem,
            },
        }

    async def aclose(self) -> None:
        for mixture in self._mixtures.values():
            await mixture.aclose()
        if self._passthrough is not None:
            await self._passthrough.aclose()


def _from_directory(folder: Path, providers: ProviderRegistry | None) -> dict[str, Mixture]:
    if not folder.is_dir():
        raise ConfigError(f"config directory {str(folder)!r} does not exist")
    found: dict[str, Mixture] = {}
    origin: dict[str, Path] = {}
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        config = load_config(path)
        if config.name in origin:
            raise ConfigError(
                f"{path} and {origin[config.name]} both define the mixture {config.name!r}; "
                "rename one (its name: field or its file)"
            )
        origin[config.name] = path
        found[config.name] = build_mixture(config, providers)
    return found
