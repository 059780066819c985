"""What a run produced: every agent's answer or error, per layer, and the totals."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from moa.types import GenerationParams, Message, Usage

__all__ = ["AgentResult", "LayerResult", "Result"]

AgentRole = Literal["proposer", "aggregator"]


@dataclass(frozen=True)
class AgentResult:
    """One agent's call: its answer, or the error that ended it after all retries."""

    agent: str
    model: str
    layer: int
    index: int
    role: AgentRole
    output: str | None
    error: str | None = None
    error_type: str | None = None
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0
    ttft_s: float | None = None
    queued_s: float = 0.0
    """The part of ``latency_s`` spent waiting for a free slot of the provider's
    concurrency limit (other calls held them), before any attempt could be sent."""
    attempts: int = 1
    finish_reason: str | None = None
    cost: float | None = None
    partial: bool = False
    """The output is a prefix: the call was stopped early (quorum, deadline) or failed mid-way."""
    notes: tuple[str, ...] = ()
    """What the engine did to this call (e.g. references truncated)."""
    messages: tuple[Message, ...] = field(default=(), repr=False, compare=False)
    """The conversation this call sent, references included (the run history keeps it)."""
    params: GenerationParams | None = field(default=None, repr=False, compare=False)
    """The sampling parameters this call sent."""
    started_at: float = field(default=0.0, compare=False)
    """Wall-clock time (Unix seconds) the call started; 0 when unknown (traces use it)."""
    computed: str | None = None
    """An answer worked out from the output rather than read in it: the number that the
    program this call wrote printed when run (``program_votes``); None otherwise."""

    @property
    def ok(self) -> bool:
        return self.error is None and self.output is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "model": self.model,
            "layer": self.layer,
            "index": self.index,
            "role": self.role,
            "ok": self.ok,
            "output": self.output,
            "error": self.error,
            "error_type": self.error_type,
            "usage": self.usage.to_dict(),
            "latency_s": round(self.latency_s, 4),
            "ttft_s": None if self.ttft_s is None else round(self.ttft_s, 4),
            "queued_s": round(self.queued_s, 4),
            "attempts": self.attempts,
            "finish_reason": self.finish_reason,
            "cost": self.cost,
            "partial": self.partial,
            "notes": list(self.notes),
            **({} if self.computed is None else {"computed": self.computed}),
        }


@dataclass(frozen=True)
class LayerResult:
    """The agents of one layer, in configuration order."""

    index: int
    agents: tuple[AgentResult, ...]
    min_ok: int = 1
    notes: tuple[str, ...] = ()
    waves: tuple[int, ...] = ()
    """How many agents each wave started, in order, when the layer was drawn in waves
    (an adaptive vote, a code check): a wave starts when the one before it is done.
    Empty when every agent started at once."""

    @property
    def answers(self) -> list[AgentResult]:
        return [a for a in self.agents if a.ok]

    def in_waves(self) -> list[tuple[AgentResult, ...]]:
        """The agents grouped by the wave that started them (one group without waves)."""
        groups: list[tuple[AgentResult, ...]] = []
        start = 0
        for size in self.waves or (len(self.agents),):
            groups.append(self.agents[start : start + size])
            start += size
        return groups

    @property
    def failures(self) -> list[AgentResult]:
        return [a for a in self.agents if not a.ok]

    @property
    def latency_s(self) -> float:
        """Per wave its slowest agent, summed over the waves."""
        return sum(max((a.latency_s for a in wave), default=0.0) for wave in self.in_waves())

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "min_ok": self.min_ok,
            "agents": [a.to_dict() for a in self.agents],
            "notes": list(self.notes),
            **({"waves": list(self.waves)} if self.waves else {}),
        }


@dataclass(frozen=True)
class Result:
    """The output of a mixture and everything that led to it."""

    output: str
    layers: tuple[LayerResult, ...]
    aggregator: AgentResult
    mixture: str = "mixture"
    trace_id: str = ""
    latency_s: float = 0.0
    ttft_s: float | None = None
    extra_calls: tuple[AgentResult, ...] = ()
    """Calls outside layers and the final aggregator (judges, critics, re-aggregators)."""
    notes: tuple[str, ...] = ()
    started_at: float = field(default=0.0, compare=False)
    """Wall-clock time (Unix seconds) the run started."""

    def calls(self) -> Iterator[AgentResult]:
        """Every call of the run, the aggregator's last."""
        for layer in self.layers:
            yield from layer.agents
        yield from self.extra_calls
        yield self.aggregator

    @property
    def usage(self) -> Usage:
        """Token totals over every call, failed ones and the aggregator included."""
        return Usage.sum(call.usage for call in self.calls())

    @property
    def cost(self) -> float | None:
        """Dollar cost over every priced call (``None`` when no call is priced)."""
        costs = [call.cost for call in self.calls() if call.cost is not None]
        return sum(costs) if costs else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mixture": self.mixture,
            "trace_id": self.trace_id,
            "output": self.output,
            "layers": [layer.to_dict() for layer in self.layers],
            "extra_calls": [c.to_dict() for c in self.extra_calls],
            "aggregator": self.aggregator.to_dict(),
            "usage": self.usage.to_dict(),
            "cost": self.cost,
            "latency_s": round(self.latency_s, 4),
            "ttft_s": None if self.ttft_s is None else round(self.ttft_s, 4),
            "notes": list(self.notes),
        }
