"""Per-request choice of how a mixture runs: strategy, quorum, deadlines, early exit.

A caller (the server's ``moa`` request field, a benchmark, a script) picks the
latency mode of one request without a second config file:

>>> fast = mixture.variant({"strategy": {"type": "chunked"}, "quorum": 2})  # doctest: +SKIP

Overrides change how the configured agents are run, never which models are
called, so a client cannot reach models the operator did not configure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from moa.engine.spec import EarlyExitSpec, LayerSpec, MixtureSpec, StrategySpec
from moa.errors import ConfigError

__all__ = ["RunOverrides", "parse_overrides"]


class RunOverrides(BaseModel):
    """Changes to one run; every field left out keeps the mixture's own setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: StrategySpec | None = None
    """E.g. ``{"type": "chunked", "chunk_tokens": 16}``."""
    early_exit: EarlyExitSpec | None = None
    quorum: int | None = Field(default=None, ge=1)
    """k of n for every proposer layer (at most the layer's size, at least its ``min_ok``)."""
    layer_deadline: float | None = Field(default=None, gt=0)
    """Seconds each proposer layer may take before it goes on with the answers it has."""
    late: Literal["cancel", "partial"] | None = None
    """What becomes of agents stopped by the quorum or a layer deadline."""
    deadline: float | None = Field(default=None, gt=0)
    """Seconds the whole run may take."""

    @field_validator("strategy", mode="after")
    @classmethod
    def _strategy_known(cls, value: StrategySpec | None) -> StrategySpec | None:
        if value is not None:
            try:
                value.options()
            except KeyError as exc:
                raise ValueError(str(exc.args[0])) from None
        return value

    def apply(self, spec: MixtureSpec) -> MixtureSpec:
        """``spec`` with these overrides."""
        changes: dict[str, Any] = {}
        if self.strategy is not None:
            changes["strategy"] = self.strategy
        if self.early_exit is not None:
            changes["early_exit"] = self.early_exit
        if self.deadline is not None:
            changes["deadline"] = self.deadline
        if self.quorum is not None or self.layer_deadline is not None or self.late is not None:
            changes["layers"] = [self._layer(layer) for layer in spec.layers]
        return spec.model_copy(update=changes)

    def _layer(self, layer: LayerSpec) -> LayerSpec:
        changes: dict[str, Any] = {}
        if self.quorum is not None:
            changes["quorum"] = max(layer.min_ok, min(self.quorum, len(layer.agents)))
        if self.layer_deadline is not None:
            changes["deadline"] = self.layer_deadline
        if self.late is not None:
            changes["late"] = self.late
        return layer.model_copy(update=changes)


def parse_overrides(data: RunOverrides | Mapping[str, Any]) -> RunOverrides:
    """Validate overrides; a mistake is a :class:`~moa.errors.ConfigError` naming the field."""
    if isinstance(data, RunOverrides):
        return data
    try:
        return RunOverrides.model_validate(dict(data))
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigError(f"invalid run overrides: {details}") from exc
