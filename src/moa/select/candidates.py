"""The configurations a selection considers, their specs, and their cost before running them.

Every configuration draws its first-layer answers from the same calls: each
model's greedy answer (temperature 0, seed 0) and its samples (seed ``i`` at
the sampling temperature). Those calls are cached, so once the single models
and their samples are measured, a vote costs nothing and a mixture costs only
its aggregator's calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from moa.engine.spec import AgentSpec, LayerSpec, MixtureSpec

__all__ = ["Budget", "Candidate", "ModelStats", "Sampling"]

Kind = Literal["single", "vote", "routed", "self-moa", "moa", "rank"]

PREFILL_SPEEDUP = 8.0
"""Reading a prompt token is roughly this much faster than writing one (CPU estimate)."""
REFERENCE_OVERHEAD = 150
"""Tokens of the aggregate instruction and the reference framing, roughly."""


@dataclass(frozen=True)
class Sampling:
    """How every model answers: greedy answers, and samples for votes and Self-MoA."""

    max_tokens: int = 512
    temperature: float = 0.7
    """Temperature of the samples after the greedy one."""
    samples: int = 4
    """Answers per model in a vote or a Self-MoA (the greedy one included)."""

    def agent(self, model: str, *, greedy: bool = True) -> AgentSpec:
        temperature = 0.0 if greedy else self.temperature
        return AgentSpec(model=model, temperature=temperature, max_tokens=self.max_tokens, seed=0)


@dataclass(frozen=True)
class Budget:
    """Limits per request; ``None`` is no limit."""

    max_calls: int | None = None
    max_tokens: int | None = None
    max_latency_s: float | None = None

    def allows(self, cost: Mapping[str, float]) -> bool:
        return (
            (self.max_calls is None or cost["calls"] <= self.max_calls + 1e-9)
            and (self.max_tokens is None or cost["tokens"] <= self.max_tokens)
            and (self.max_latency_s is None or cost["latency_s"] <= self.max_latency_s)
        )

    def describe(self) -> str:
        parts = [
            f"{self.max_calls} calls" if self.max_calls is not None else "",
            f"{self.max_tokens} tokens" if self.max_tokens is not None else "",
            f"{self.max_latency_s:g} s" if self.max_latency_s is not None else "",
        ]
        return ", ".join(p for p in parts if p) or "no limit"


@dataclass(frozen=True)
class ModelStats:
    """A model's measured single-answer costs on the dev items (means per request)."""

    prompt_tokens: float
    completion_tokens: float
    latency_s: float

    def seconds_per_prompt_token(self) -> float:
        per_token = self.latency_s / max(self.completion_tokens, 1.0)
        return per_token / PREFILL_SPEEDUP


@dataclass(frozen=True)
class Candidate:
    """One configuration: a shape, its proposers and its aggregator."""

    kind: Kind
    proposers: tuple[str, ...]
    """First-layer models (a vote or Self-MoA repeats one model ``samples`` times)."""
    aggregator: str
    layers: int = 1
    answer: str = "number"
    """What a vote compares (``number`` or ``choice``)."""
    routes: tuple[str, ...] = ()
    """Of a ``routed`` configuration: the kinds of request it votes on or checks (``number``,
    ``choice``, ``code``); every other request gets the model's greedy answer alone."""
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def name(self) -> str:
        short = [p.split(":", 1)[-1] for p in self.proposers]
        agg = self.aggregator.split(":", 1)[-1]
        if self.kind == "single":
            return f"single {agg}"
        if self.kind == "vote" and len(set(short)) == 1:
            return f"vote {short[0]} x{len(short)}"
        if self.kind == "vote":
            return f"vote [{', '.join(short)}]"
        if self.kind == "routed":
            return f"routed {short[0]} x{len(short)} ({', '.join(self.routes)})"
        if self.kind == "self-moa":
            by = "" if self.aggregator == self.proposers[0] else f" -> {agg}"
            return f"self-moa {short[0]} x{len(short)}{by}"
        if self.kind == "rank":
            return f"rank [{', '.join(short)}] judge {agg}"
        depth = f" x{self.layers} layers" if self.layers > 1 else ""
        return f"moa [{', '.join(short)}]{depth} -> {agg}"

    def spec(self, sampling: Sampling) -> MixtureSpec:
        aggregator = sampling.agent(self.aggregator)
        name = self.name.replace(" ", "-")
        for mark in "[](),":
            name = name.replace(mark, "")
        base: dict[str, Any] = {"name": name, "aggregator": aggregator}
        if self.kind == "single":
            return MixtureSpec(**base)
        if self.kind in ("vote", "self-moa", "routed") and len(set(self.proposers)) == 1:
            options: dict[str, Any] = {
                "type": "vote" if self.kind == "routed" else self.kind,
                "samples": len(self.proposers),
                "greedy_first": True,
                "temperature": sampling.temperature,
                "model": {"model": self.proposers[0], "max_tokens": sampling.max_tokens},
            }
            if self.kind == "vote":
                options["answer"] = self.answer
            if self.kind == "routed":
                # The shape of the `local` preset: vote, or check code, where the request
                # asks for a kind in ``routes``; the greedy answer and one sample first.
                options.update(
                    answer="auto",
                    auto_votes=list(self.routes),
                    adaptive=True,
                    first_wave=min(2, len(self.proposers)),
                )
            return MixtureSpec.model_validate({**base, "strategy": options})
        layer = LayerSpec(agents=[sampling.agent(m) for m in self.proposers])
        spec: dict[str, Any] = {**base, "layers": [layer] * self.layers}
        if self.kind in ("rank", "vote"):
            spec["strategy"] = {"type": self.kind}
            if self.kind == "vote":
                spec["strategy"]["answer"] = self.answer
        return MixtureSpec.model_validate(spec)

    def estimated_cost(self, stats: Mapping[str, ModelStats]) -> dict[str, float]:
        """Calls, tokens and critical-path seconds per request, from single-model measurements."""
        first = [stats[m] for m in self.proposers]
        agg = stats[self.aggregator]
        question = agg.prompt_tokens
        written = sum(s.completion_tokens for s in first)
        calls = float(len(first))
        tokens = sum(s.prompt_tokens + s.completion_tokens for s in first)
        latency = max(s.latency_s for s in first)
        if self.kind == "single":
            return {
                "calls": 1.0,
                "tokens": agg.prompt_tokens + agg.completion_tokens,
                "latency_s": agg.latency_s,
            }
        if self.kind in ("vote", "routed"):  # routed: at most every sample
            return {"calls": calls, "tokens": tokens, "latency_s": latency}
        for _ in range(self.layers - 1):
            calls += len(first)
            reading = question + written + REFERENCE_OVERHEAD
            tokens += sum(reading + s.completion_tokens for s in first)
            latency += max(s.latency_s + reading * s.seconds_per_prompt_token() for s in first)
        reading = question + written + REFERENCE_OVERHEAD
        writing = 20.0 if self.kind == "rank" else agg.completion_tokens
        calls += 1
        tokens += reading + writing
        per_token = agg.latency_s / max(agg.completion_tokens, 1.0)
        latency += writing * per_token + reading * agg.seconds_per_prompt_token()
        return {"calls": calls, "tokens": tokens, "latency_s": latency}
