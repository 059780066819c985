"""Config files and presets: YAML in, a ready :class:`~moa.engine.mixture.Mixture` out.

A config file is a :class:`~moa.engine.spec.MixtureSpec` plus the ``providers:``
and ``local:`` blocks that say how to reach the models. Validation is strict:
an unknown or mistyped key is a :class:`~moa.errors.ConfigError` naming it.
Presets are the same YAML files shipped as package data (``moa/presets``).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moa.engine.mixture import Mixture
from moa.engine.spec import MixtureSpec
from moa.errors import ConfigError
from moa.providers.registry import ProviderRegistry
from moa.providers.settings import LocalSettings, ProviderSettings

__all__ = [
    "DEFAULT_PRESET",
    "Endpoints",
    "MixtureConfig",
    "build_mixture",
    "load_config",
    "load_endpoints",
    "load_mixture",
    "parse_config",
    "preset_names",
]

DEFAULT_PRESET = "local"
M = TypeVar("M", bound=BaseModel)


class MixtureConfig(MixtureSpec):
    """A mixture plus how to reach its providers: the schema of a YAML config file."""

    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    local: LocalSettings = Field(default_factory=LocalSettings)
    history: bool = True
    """Record the runs of ``moa run`` and ``moa chat`` in the run history (``moa logs``)."""

    def spec(self) -> MixtureSpec:
        data = self.model_dump(exclude={"providers", "local", "history"})
        return MixtureSpec.model_validate(data)

    def registry(self) -> ProviderRegistry:
        return ProviderRegistry(self.providers, self.local)


def _format_error(source: str, error: ValidationError) -> str:
    lines = [f"invalid config {source}:"]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling; see docs/configuration.md)"
        lines.append(f"  {field}: {message}")
    return "\n".join(lines)


def _validated(model: type[M], data: Any, source: str) -> M:
    """``data`` as ``model``; a ConfigError naming every offending field otherwise."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"invalid config {source}: the top level must be a mapping")
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_format_error(source, exc)) from exc


def parse_config(data: Mapping[str, Any], source: str = "<dict>") -> MixtureConfig:
    """Validate a config mapping; errors name every offending field."""
    return _validated(MixtureConfig, data, source)


def preset_names() -> list[str]:
    """Names of the shipped presets."""
    folder = resources.files("moa").joinpath("presets")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _preset_text(name: str) -> str | None:
    entry = resources.files("moa").joinpath(f"presets/{name}.yaml")
    return entry.read_text("utf-8") if entry.is_file() else None


def _read(source: str | Path) -> tuple[Any, str]:
    """The YAML data of a config file path or a preset name, and where it came from."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml", ".json") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            text, origin = path.read_text("utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {str(path)!r}: {exc}") from exc
    else:
        preset = _preset_text(str(source))
        if preset is None:
            raise ConfigError(
                f"{str(source)!r} is neither a config file nor a preset; "
                f"presets: {', '.join(preset_names())}"
            )
        text, origin = preset, f"preset {source!r}"
    try:
        return yaml.safe_load(text) or {}, origin
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {origin} is not valid YAML: {exc}") from exc
    except RecursionError as exc:
        raise ConfigError(f"config {origin} nests too deeply to be a mixture config") from exc


def load_config(source: str | Path) -> MixtureConfig:
    """Load a config file by path, or a preset by name."""
    data, origin = _read(source)
    config = parse_config(data, origin)
    if "name" not in config.model_fields_set:
        path = Path(source)
        name = path.stem if origin == str(path) else str(source)
        config = config.model_copy(update={"name": name})
    return config


class Endpoints(BaseModel):
    """How to reach the models, without a mixture: a config's ``providers:`` and ``local:``."""

    model_config = ConfigDict(extra="forbid")

    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    local: LocalSettings = Field(default_factory=LocalSettings)


def load_endpoints(source: str | Path) -> Endpoints:
    """The ``providers:`` and ``local:`` blocks of a config file (or preset).

    The file may hold a whole mixture config or only those blocks; any other key must be
    one a mixture config knows, so a misspelt ``provider:`` is an error, not ignored."""
    data, origin = _read(source)
    if isinstance(data, Mapping):
        # The mixture's own keys are not read here; anything else is checked as usual.
        mixture = set(MixtureConfig.model_fields) - set(Endpoints.model_fields)
        data = {key: value for key, value in data.items() if key not in mixture}
    return _validated(Endpoints, data, origin)


def build_mixture(config: MixtureConfig, providers: ProviderRegistry | None = None) -> Mixture:
    """A mixture from a validated config (``providers`` replaces the config's registry)."""
    return Mixture(config.spec(), providers or config.registry())


def load_mixture(source: str | Path = DEFAULT_PRESET) -> Mixture:
    """A mixture from a config file path or a preset name."""
    return build_mixture(load_config(source))
