"""What a mixture is: layers of agents and a final aggregator (validated, immutable).

These pydantic models are both the Python API and the schema of YAML config
files, so every unknown or mistyped key is an error that names the field.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from moa.types import GenerationParams

__all__ = ["AgentSpec", "LayerSpec", "MixtureSpec", "Price", "RetryPolicy", "StrategySpec"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentSpec(_Strict):
    """One agent: a model id ``provider:model`` and how to sample it."""

    model: str = Field(min_length=3, pattern=r"^[^:\s]+:.+$")
    name: str | None = None
    system: str | None = None
    """The agent's own system prompt (a role), added after the user's system message."""
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: list[str] | None = None
    seed: int | None = None
    timeout: float | None = Field(default=None, gt=0)
    """Seconds one attempt of this agent's call may take."""
    extra: dict[str, Any] = Field(default_factory=dict)
    """Provider-specific parameters passed through unchanged (e.g. ``repetition_penalty``)."""

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def params(self) -> GenerationParams:
        return GenerationParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            stop=tuple(self.stop) if self.stop is not None else None,
            seed=self.seed,
            extra=dict(self.extra),
        )

    def label(self, layer: int, index: int) -> str:
        return self.name or f"L{layer}.{index + 1} {self.model}"


class LayerSpec(_Strict):
    """Agents that run concurrently; ``min_ok`` of them must succeed."""

    agents: list[AgentSpec] = Field(min_length=1)
    min_ok: int = Field(default=1, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        return {"agents": value} if isinstance(value, list) else value

    @model_validator(mode="after")
    def _quorum_possible(self) -> LayerSpec:
        if self.min_ok > len(self.agents):
            raise ValueError(
                f"min_ok={self.min_ok} is more than the layer's {len(self.agents)} agents"
            )
        return self


class RetryPolicy(_Strict):
    """Retries of one failed call: exponential backoff with full jitter, honouring Retry-After."""

    max_attempts: int = Field(default=3, ge=1)
    backoff_initial: float = Field(default=0.5, ge=0)
    backoff_max: float = Field(default=20.0, ge=0)
    multiplier: float = Field(default=2.0, ge=1.0)
    jitter: bool = True


class Price(_Strict):
    """US dollars per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


class StrategySpec(BaseModel):
    """``strategy:`` block: a registered strategy name and its options (validated by it)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = "layered"

    def options(self) -> BaseModel:
        from moa.engine.strategy import get_strategy

        entry = get_strategy(self.type)
        return entry.options.model_validate(self.model_extra or {})


class MixtureSpec(_Strict):
    """Layers of proposers/refiners, then one aggregator whose answer is the output.

    With no layers the aggregator simply answers (a single model); with one
    layer this is the MoA-Lite shape; the paper's MoA has two refining layers.
    """

    name: str = "mixture"
    layers: list[LayerSpec] = Field(default_factory=list)
    aggregator: AgentSpec
    defaults: AgentSpec | None = None
    """Defaults for every agent (its ``model`` is ignored): e.g. temperature, max_tokens."""
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout: float = Field(default=300.0, gt=0)
    """Default seconds for one attempt of one call."""
    deadline: float | None = Field(default=None, gt=0)
    """Seconds the whole run may take."""
    instruction: str | None = None
    """Replaces the shipped aggregate-and-synthesize instruction."""
    prices: dict[str, Price] = Field(default_factory=dict)
    """Price per model id, for cost accounting."""
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    """How the layers are run (default ``layered``: the paper's MoA)."""

    @field_validator("strategy", mode="after")
    @classmethod
    def _strategy_known(cls, value: StrategySpec) -> StrategySpec:
        try:
            value.options()
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _defaults_need_no_model(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("defaults"), dict):
            defaults = dict(value["defaults"])
            defaults.setdefault("model", "defaults:none")
            value = {**value, "defaults": defaults}
        return value

    def effective(self, agent: AgentSpec) -> GenerationParams:
        """The agent's sampling parameters over the mixture defaults."""
        base = self.defaults.params() if self.defaults else GenerationParams()
        return base.merged(agent.params())

    def agent_timeout(self, agent: AgentSpec) -> float:
        if agent.timeout is not None:
            return agent.timeout
        if self.defaults is not None and self.defaults.timeout is not None:
            return self.defaults.timeout
        return self.timeout

    def agent_system(self, agent: AgentSpec) -> str | None:
        if agent.system is not None:
            return agent.system
        return self.defaults.system if self.defaults else None

    def model_ids(self) -> list[str]:
        """Every distinct model id used, in order of first appearance."""
        seen: dict[str, None] = {}
        for layer in self.layers:
            for agent in layer.agents:
                seen.setdefault(agent.model, None)
        seen.setdefault(self.aggregator.model, None)
        return list(seen)
