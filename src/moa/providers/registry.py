"""Resolve ``provider:model`` ids to provider instances.

Providers are built lazily on first use from their settings: the built-in
names of :mod:`moa.providers.endpoints`, a config file's ``providers:`` block,
or instances added with :meth:`ProviderRegistry.add` (fakes, nested mixtures,
plugins). Third-party kinds register a factory with :func:`register_kind` or
through the ``moa.providers`` entry-point group.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from importlib import metadata

from moa.errors import ConfigError, MissingAPIKeyError
from moa.providers.base import Provider
from moa.providers.endpoints import BUILTIN_PROVIDERS
from moa.providers.settings import LocalSettings, ProviderSettings

__all__ = ["ProviderFactory", "ProviderRegistry", "register_kind", "split_model_id"]

ProviderFactory = Callable[[str, ProviderSettings, LocalSettings], Provider]
_KINDS: dict[str, ProviderFactory] = {}


def register_kind(kind: str, factory: ProviderFactory) -> None:
    """Make ``kind:`` usable in provider settings, built by ``factory(name, settings, local)``."""
    _KINDS[kind] = factory


def split_model_id(model_id: str) -> tuple[str, str]:
    """Split ``provider:model`` (the model part may itself contain colons)."""
    provider, sep, model = model_id.partition(":")
    if not sep or not provider or not model:
        raise ConfigError(
            f"model id {model_id!r} must look like 'provider:model', "
            "e.g. 'local:qwen2.5-coder-1.5b' or 'together:Qwen/Qwen2.5-72B-Instruct-Turbo'"
        )
    return provider, model


def resolve_api_key(name: str, settings: ProviderSettings) -> str | None:
    """The key from the settings or its env var; raises when a required key is missing."""
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    env_var = settings.api_key_env or f"{name.upper().replace('-', '_')}_API_KEY"
    key = os.environ.get(env_var)
    required = settings.requires_key if settings.requires_key is not None else True
    if not key and required:
        raise MissingAPIKeyError(name, env_var)
    return key or None


def _build_openai(name: str, settings: ProviderSettings, local: LocalSettings) -> Provider:
    from moa.providers.openai_compat import OpenAICompatProvider

    return OpenAICompatProvider.from_settings(name, settings)


def _build_local(name: str, settings: ProviderSettings, local: LocalSettings) -> Provider:
    from moa.providers.local import LocalProvider

    return LocalProvider(name=name, settings=local)


register_kind("openai", _build_openai)
register_kind("local", _build_local)


def _entry_point_factory(kind: str) -> ProviderFactory | None:
    for entry in metadata.entry_points(group="moa.providers"):
        if entry.name == kind:
            factory: ProviderFactory = entry.load()
            return factory
    return None


class ProviderRegistry:
    """Provider instances by name, created on first use and closed together."""

    def __init__(
        self,
        settings: Mapping[str, ProviderSettings] | None = None,
        local: LocalSettings | None = None,
    ) -> None:
        self._settings: dict[str, ProviderSettings] = {**BUILTIN_PROVIDERS, **(settings or {})}
        self._local = local or LocalSettings()
        self._instances: dict[str, Provider] = {}

    def add(self, name: str, provider: Provider) -> ProviderRegistry:
        """Use ``provider`` for model ids starting with ``name:``."""
        self._instances[name] = provider
        return self

    def names(self) -> list[str]:
        return sorted({*self._settings, *self._instances})

    def settings(self, name: str) -> ProviderSettings | None:
        return self._settings.get(name)

    def get(self, name: str) -> Provider:
        if name in self._instances:
            return self._instances[name]
        settings = self._settings.get(name)
        if settings is None:
            raise ConfigError(
                f"unknown provider {name!r}; known: {', '.join(self.names())}. "
                f"Add it under 'providers:' in the config (base_url, api_key_env)"
            )
        factory = _KINDS.get(settings.kind) or _entry_point_factory(settings.kind)
        if factory is None:
            raise ConfigError(f"providers.{name}.kind: unknown provider kind {settings.kind!r}")
        provider = factory(name, settings, self._local)
        self._instances[name] = provider
        return provider

    def resolve(self, model_id: str) -> tuple[Provider, str]:
        """The provider instance and the provider-side model name of ``model_id``."""
        name, model = split_model_id(model_id)
        return self.get(name), model

    async def aclose(self) -> None:
        """Release every provider's event-loop-bound resources (connections).

        The instances stay: a provider rebuilds such resources on its next use, so
        loaded local models survive the sync facade's one-event-loop-per-call.
        """
        for provider in self._instances.values():
            await provider.aclose()
