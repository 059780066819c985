"""Strategies: pluggable answers to "what runs, in which order" over the same engine.

A strategy is an async function of a :class:`~moa.engine.context.RunContext`
returning the final aggregator's result. Strategies register a name, an options
model (validated strictly from the ``strategy:`` block of a config) and a
builder; built-in ones live in :mod:`moa.strategies` and are loaded on first
lookup, third-party ones through the ``moa.strategies`` entry-point group.

A strategy that needs something of the mixture's providers beyond answering
(e.g. an aggregator that can continue its own text) also registers a
``requires`` check; :meth:`Mixture.check <moa.engine.mixture.Mixture.check>`
runs it, so the mixture is refused before any call rather than failing midway.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from moa.engine.context import RunContext
    from moa.engine.result import AgentResult
    from moa.engine.spec import MixtureSpec
    from moa.providers.registry import ProviderRegistry

__all__ = [
    "NoOptions",
    "Strategy",
    "StrategyEntry",
    "StrategyRequirement",
    "get_strategy",
    "register_strategy",
    "strategy_names",
]

Strategy = Callable[["RunContext"], Awaitable["AgentResult"]]

StrategyRequirement = Callable[["MixtureSpec", "ProviderRegistry"], None]
"""Raises the :class:`~moa.errors.MoAError` that says what the mixture lacks for the
strategy and how to fix it; returns when the mixture can run it. Makes no call."""


class NoOptions(BaseModel):
    """For strategies without options."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class StrategyEntry:
    name: str
    options: type[BaseModel]
    build: Callable[[Any], Strategy]
    summary: str = ""
    requires: StrategyRequirement | None = None


_REGISTRY: dict[str, StrategyEntry] = {}
_LOADED = False


def register_strategy(
    name: str,
    build: Callable[[Any], Strategy],
    options: type[BaseModel] = NoOptions,
    summary: str = "",
    requires: StrategyRequirement | None = None,
) -> None:
    """Make ``strategy: {type: name, ...options}`` usable in configs.

    ``requires`` checks, without any call, that a mixture's providers can run the
    strategy (see :data:`StrategyRequirement`).
    """
    _REGISTRY[name] = StrategyEntry(name, options, build, summary, requires)


def _load_builtins() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    importlib.import_module("moa.strategies")
    for entry in metadata.entry_points(group="moa.strategies"):
        entry.load()


def get_strategy(name: str) -> StrategyEntry:
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown strategy {name!r}; known: {', '.join(strategy_names())}") from None


def strategy_names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)
