"""What the built-in strategies share: options for sampling one model, prompts, extra calls.

Every strategy here runs the configured layers like the paper's MoA. Setting
``samples`` (or ``roles``) adds a first layer of samples of one model with
distinct seeds, temperatures or role prompts — Self-MoA's source of diversity —
which the configured layers then refine. Calls outside layers (judges, critics,
intermediate aggregators) are recorded in ``RunContext.extra_calls``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from functools import cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from moa.engine.call import AgentCall, call_agent
from moa.engine.context import RunContext
from moa.engine.events import LayerStarted
from moa.engine.references import Reference
from moa.engine.result import AgentResult, LayerResult
from moa.engine.spec import AgentSpec, LayerSpec
from moa.strategies.early_exit import exit_early
from moa.strategies.window import ContextPolicy, fit_for_layer

__all__ = [
    "AfterLayer",
    "StrategyOptions",
    "finish",
    "judge_call",
    "prompt",
    "proposer_layers",
    "role_names",
    "role_prompt",
    "run_extra",
    "run_layers",
    "sample_layer",
]

AfterLayer = Callable[
    [int, LayerResult, list[Reference], bool], Awaitable[tuple[list[Reference], bool]]
]
"""``(layer number, its result, its references, is_last) -> (references to pass on, stop)``.

Not called for a layer after which early exit ends the run: its answers agree,
and a hook's extra call (a judge) would only delay the answer."""


@cache
def prompt(name: str) -> str:
    """A shipped prompt (package data ``moa/prompts/<name>.txt``)."""
    return resources.files("moa").joinpath(f"prompts/{name}.txt").read_text("utf-8").strip()


def role_names() -> list[str]:
    """Names of the shipped role prompts, usable in ``roles:``."""
    folder = resources.files("moa").joinpath("prompts")
    names = (p.name for p in folder.iterdir() if p.name.startswith("role-"))
    return sorted(n[len("role-") : -len(".txt")] for n in names if n.endswith(".txt"))


def role_prompt(role: str) -> str:
    """The text of a shipped role by name; any other string is taken as the role text itself."""
    return prompt(f"role-{role}") if role in role_names() else role


class StrategyOptions(BaseModel):
    """Options every built-in strategy accepts (the ``strategy:`` block of a config)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    samples: int | None = Field(default=None, ge=1, le=64)
    """Add a first layer of this many samples of ``model`` (Self-MoA's proposers)."""
    model: AgentSpec | None = None
    """The sampled agent (default: the mixture's aggregator)."""
    temperature: float | list[float] | None = 0.7
    """Sampling temperature of the samples; a list is cycled through, one value per sample."""
    seed: int = 0
    """Sample ``i`` uses seed ``seed + i``, so samples differ yet runs repeat."""
    greedy_first: bool = False
    """The first sample is greedy (temperature 0), the others sampled."""
    roles: list[str] = Field(default_factory=list)
    """Role prompts cycled over the samples: shipped names (see ``moa strategies``) or text."""
    context: ContextPolicy | None = None
    """What to do when references would overflow an agent's context window."""

    @model_validator(mode="after")
    def _sampling_needs_samples(self) -> StrategyOptions:
        if self.samples is None and not self.roles:
            given = {"model", "greedy_first", "seed"} & self.model_fields_set
            if given:
                raise ValueError(f"{', '.join(sorted(given))} only apply with samples: N")
        if isinstance(self.temperature, list) and not self.temperature:
            raise ValueError("temperature: give a number or a non-empty list")
        return self

    @property
    def sample_count(self) -> int:
        return self.samples if self.samples is not None else len(self.roles)


def sample_layer(ctx: RunContext, options: StrategyOptions) -> LayerSpec | None:
    """The layer of samples the options ask for, if any."""
    count = options.sample_count
    if not count:
        return None
    base = options.model or ctx.spec.aggregator.model_copy(update={"name": None})
    temperatures = options.temperature
    agents = []
    for i in range(count):
        update: dict[str, Any] = {"seed": options.seed + i, "name": f"sample {i + 1}"}
        if isinstance(temperatures, list):
            update["temperature"] = temperatures[i % len(temperatures)]
        elif temperatures is not None:
            update["temperature"] = temperatures
        if options.greedy_first and i == 0:
            update["temperature"] = 0.0
        if options.roles:
            role = options.roles[i % len(options.roles)]
            update["system"] = role_prompt(role)
            update["name"] = f"sample {i + 1} ({role if role in role_names() else 'role'})"
        agents.append(base.model_copy(update=update))
    return LayerSpec(agents=agents)


def proposer_layers(ctx: RunContext, options: StrategyOptions) -> list[LayerSpec]:
    """The samples (if asked for), then the configured layers."""
    first = sample_layer(ctx, options)
    return ([first] if first else []) + list(ctx.spec.layers)


async def run_layers(
    ctx: RunContext, options: StrategyOptions, after: AfterLayer | None = None
) -> list[Reference]:
    """Run every proposer layer; ``after`` may filter the answers passed on, or stop early."""
    references: list[Reference] = []
    layers = proposer_layers(ctx, options)
    for number, layer in enumerate(layers, start=1):
        shown = fit_for_layer(ctx, layer, references, options.context)
        result = await ctx.run_layer(number, layer, shown)
        references = ctx.references_of(result.agents)
        remaining = len(layers) - number
        if exit_early(ctx, result, remaining=remaining):
            break
        if after is not None:
            references, stop = await after(number, result, references, not remaining)
            if stop and remaining:
                ctx.notes.append(f"stopped early after layer {number} of {len(layers)}")
                break
    return references


async def run_extra(
    ctx: RunContext, calls: Sequence[AgentCall], *, announce: bool = False
) -> list[AgentResult]:
    """Run calls outside layers concurrently; each is recorded as it finishes."""
    if announce and calls:
        ctx.emit(LayerStarted(calls[0].layer, "aggregator", tuple(c.label for c in calls)))

    async def one(call: AgentCall) -> AgentResult:
        result = await call_agent(call)
        ctx.extra_calls.append(result)
        ctx.record(result)
        return result

    return list(await asyncio.gather(*(one(call) for call in calls)))


async def judge_call(ctx: RunContext, call: AgentCall) -> AgentResult:
    """Run a deciding call whose reply is not the answer (not streamed, not yet recorded
    as an extra call: :func:`finish` makes it the final call when it succeeded)."""
    ctx.emit(LayerStarted(call.layer, "aggregator", (call.label,)))
    result = await call_agent(call)
    ctx.record(result)
    if not result.ok:
        ctx.extra_calls.append(result)
    return result


def finish(
    ctx: RunContext,
    text: str,
    *,
    base: AgentResult | None = None,
    name: str,
    layer: int | None = None,
    notes: Sequence[str] = (),
) -> AgentResult:
    """End the run with ``text`` chosen, not written, by the final step; it is streamed too.

    ``base`` is the successful call that chose it (a judge), whose usage then
    counts once, as the final call; without one the choice cost no call (a vote).
    """
    ctx.final_delta(text)
    if base is not None and base.ok:
        return replace(base, output=text, notes=(*base.notes, *notes))
    return AgentResult(
        agent=name,
        model=f"moa:{name}",
        layer=layer if layer is not None else len(ctx.layers) + 1,
        index=0,
        role="aggregator",
        output=text,
        finish_reason="stop",
        notes=tuple(notes),
    )
