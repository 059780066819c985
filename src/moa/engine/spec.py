"""What a mixture is: layers of agents and a final aggregator (validated, immutable).

These pydantic models are both the Python API and the schema of YAML config
files, so every unknown or mistyped key is an error that names the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from moa.types import GenerationParams

__all__ = [
    "AgentSpec",
    "CircuitSpec",
    "EarlyExitSpec",
    "HedgeSpec",
    "LayerSpec",
    "MixtureSpec",
    "Price",
    "RetryPolicy",
    "StrategySpec",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HedgeSpec(_Strict):
    """A duplicate request to a backup model when the agent's own call is slow.

    The backup starts ``after`` seconds, or once the call has run longer than the
    ``percentile`` of this model's observed latencies (after ``min_samples`` calls;
    before that, ``after`` if given, else no hedge). The first call to finish wins
    (for the streamed final answer: the first to write a token); the other is
    stopped, and both count in the usage.
    """

    model: str = Field(min_length=3, pattern=r"^[^:\s]+:.+$")
    after: float | None = Field(default=None, ge=0)
    percentile: float | None = Field(default=None, gt=0, lt=100)
    min_samples: int = Field(default=5, ge=1)

    @model_validator(mode="after")
    def _needs_a_trigger(self) -> HedgeSpec:
        if self.after is None and self.percentile is None:
            raise ValueError("a hedge needs 'after' (seconds) or 'percentile' (e.g. 90)")
        return self


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
    deadline: float | None = Field(default=None, gt=0)
    """Seconds this agent's call may take in all, retries included; when they pass the call is
    stopped and the text it wrote so far is used, marked partial."""
    hedge: HedgeSpec | None = None
    fallback: str | None = Field(default=None, pattern=r"^([^:\s]+:.+|proposal)$")
    """For the aggregator: when its call fails before any of the answer was streamed, this
    ``provider:model`` answers in its place; ``proposal`` answers with the first finished
    answer of the last layer instead (agents in config order). Recorded in the run's notes."""
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
    """Agents that run concurrently; ``min_ok`` of them must succeed.

    ``quorum`` and ``deadline`` let the layer go on before every agent is done;
    ``late`` says what becomes of the agents still running then.
    """

    agents: list[AgentSpec] = Field(min_length=1)
    min_ok: int = Field(default=1, ge=1)
    quorum: int | None = Field(default=None, ge=1)
    """Go on as soon as this many agents have answered (k of n)."""
    deadline: float | None = Field(default=None, gt=0)
    """Seconds after which the layer goes on with the answers it has."""
    late: Literal["cancel", "partial"] = "cancel"
    """Agents still running at the quorum or deadline are stopped; ``partial`` keeps the text
    they wrote so far as a reference marked unfinished, ``cancel`` drops it."""

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
        if self.quorum is not None and not self.min_ok <= self.quorum <= len(self.agents):
            raise ValueError(
                f"quorum={self.quorum} must be between min_ok={self.min_ok} "
                f"and the layer's {len(self.agents)} agents"
            )
        for agent in self.agents:
            if agent.fallback is not None:
                raise ValueError(
                    f"fallback is for the aggregator; {agent.model} is a layer's agent "
                    "(a failed proposer is left out and the others carry on)"
                )
        return self


class RetryPolicy(_Strict):
    """Retries of one failed call: exponential backoff with full jitter, honouring Retry-After."""

    max_attempts: int = Field(default=3, ge=1)
    backoff_initial: float = Field(default=0.5, ge=0)
    backoff_max: float = Field(default=20.0, ge=0)
    multiplier: float = Field(default=2.0, ge=1.0)
    jitter: bool = True


class CircuitSpec(_Strict):
    """The circuit breaker of each provider (see :mod:`moa.engine.breaker`)."""

    failures: int = Field(default=10, ge=1)
    """Failures in a row (timeouts, connection errors, 5xx, 429) that open the circuit."""
    cooldown: float = Field(default=30.0, gt=0)
    """Seconds calls to the provider are skipped before one is let through to try it."""


class Price(_Strict):
    """US dollars per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


class EarlyExitSpec(_Strict):
    """Skip the remaining proposer layers once a layer's answers agree.

    ``answer``: the final answers extracted from the texts (a boxed value, an
    "answer:" line, else the last number) agree for at least ``threshold`` of
    them (default 1.0: all). ``similarity``: the mean pairwise word-level
    similarity of the texts is at least ``threshold`` (default 0.9).
    """

    method: Literal["answer", "similarity"] = "answer"
    threshold: float | None = Field(default=None, gt=0, le=1)
    min_answers: int = Field(default=2, ge=1)
    """Fewer answers than this never count as agreement."""

    def effective_threshold(self) -> float:
        if self.threshold is not None:
            return self.threshold
        return 1.0 if self.method == "answer" else 0.9


class StrategySpec(BaseModel):
    """``strategy:`` block: a registered strategy name and its options (validated by it)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = "layered"

    def options(self) -> BaseModel:
        from moa.engine.strategy import get_strategy

        entry = get_strategy(self.type)
        return entry.options.model_validate(self.model_extra or {})

    def agents(self) -> list[AgentSpec]:
        """The agents its options name: the sampled model, a critic, a judge, aggregators."""
        options = self.options()
        found: list[AgentSpec] = []
        for field in type(options).model_fields:
            value = getattr(options, field)
            for item in value if isinstance(value, list | tuple) else [value]:
                if isinstance(item, AgentSpec):
                    found.append(item)
        return found


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
    circuit: CircuitSpec | None = Field(default_factory=CircuitSpec)
    """Skip a provider for a while after failures in a row; ``null`` turns it off."""
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
    early_exit: EarlyExitSpec | None = None
    """Skip the remaining proposer layers when a layer's answers agree."""

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

    def agent_deadline(self, agent: AgentSpec) -> float | None:
        if agent.deadline is not None:
            return agent.deadline
        return self.defaults.deadline if self.defaults else None

    def agent_system(self, agent: AgentSpec) -> str | None:
        if agent.system is not None:
            return agent.system
        return self.defaults.system if self.defaults else None

    def model_ids(self) -> list[str]:
        """Every distinct model id used, in order of first appearance (the strategy's last)."""
        seen: dict[str, None] = {}
        layered = [a for layer in self.layers for a in layer.agents]
        for agent in [*layered, self.aggregator, *self.strategy.agents()]:
            seen.setdefault(agent.model, None)
            if agent.hedge is not None:
                seen.setdefault(agent.hedge.model, None)
            if agent.fallback not in (None, "proposal"):
                seen.setdefault(agent.fallback, None)
        return list(seen)
