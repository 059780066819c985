"""Context safety: references that would overflow an agent's context window.

Token counts are estimates (:func:`moa.types.estimate_tokens`, about four
characters a token), so ``reserve`` should leave some slack. When the prompt
with all references would not fit, the references are either shortened (their
middles cut, so each keeps its start and its conclusion) or aggregated with a
sliding window: the aggregator sees its running synthesis plus as many new
answers as fit, over as many steps as needed. Either way a note says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from moa.engine.context import RunContext
from moa.engine.references import Reference, with_references
from moa.engine.spec import AgentSpec, LayerSpec
from moa.types import estimate_tokens

__all__ = [
    "ContextPolicy",
    "fit_for_agent",
    "fit_for_layer",
    "fits",
    "prompt_tokens",
    "truncate_references",
]

MIN_REFERENCE_TOKENS = 32
"""Below this a reference says too little to be worth showing; drop some instead."""
_MESSAGE_OVERHEAD = 4
"""Tokens a chat template spends on each message's framing, roughly."""


class ContextPolicy(BaseModel):
    """``context:`` block: context windows and what to do on overflow."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    window: int | None = Field(default=None, ge=256)
    """Context window in tokens of every model without an entry in ``windows``."""
    windows: dict[str, int] = Field(default_factory=dict)
    """Context window per model id, e.g. ``{"local:qwen2.5-coder-1.5b": 4096}``."""
    overflow: Literal["truncate", "sliding"] = "truncate"
    """``truncate``: shorten the references; ``sliding``: aggregate them a window at a time."""
    reserve: int | None = Field(default=None, ge=0)
    """Tokens kept free for the answer (default: the agent's max_tokens, else 512)."""

    def window_of(self, model_id: str) -> int | None:
        return self.windows.get(model_id, self.window)


def prompt_tokens(
    ctx: RunContext,
    agent: AgentSpec,
    references: Sequence[Reference],
    instruction: str | None = None,
) -> int:
    """Estimated prompt tokens of ``agent``'s call over ``references``."""
    messages = with_references(
        ctx.messages,
        references,
        instruction=instruction or ctx.spec.instruction,
        agent_system=ctx.spec.agent_system(agent),
    )
    return sum(estimate_tokens(m.content) + _MESSAGE_OVERHEAD for m in messages)


def reserve_of(ctx: RunContext, agent: AgentSpec, policy: ContextPolicy) -> int:
    if policy.reserve is not None:
        return policy.reserve
    return ctx.spec.effective(agent).max_tokens or 512


def fits(
    ctx: RunContext,
    agent: AgentSpec,
    references: Sequence[Reference],
    policy: ContextPolicy | None,
    instruction: str | None = None,
) -> bool:
    """Whether the call fits ``agent``'s window (always, when no window is known)."""
    window = policy.window_of(agent.model) if policy else None
    if policy is None or window is None:
        return True
    used = prompt_tokens(ctx, agent, references, instruction) + reserve_of(ctx, agent, policy)
    return used <= window


def _cut_middle(text: str, chars: int) -> str:
    if len(text) <= chars:
        return text
    marker = f"\n[... {len(text) - chars} characters left out ...]\n"
    keep = max(chars - len(marker), 0)
    head = keep // 2
    return text[:head] + marker + text[len(text) - (keep - head) :]


def _caps(lengths: Sequence[int], total: int) -> list[int]:
    """Share ``total`` characters: short texts keep everything, long ones split the rest evenly."""
    caps = [0] * len(lengths)
    remaining, left = total, len(lengths)
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        share = remaining // left
        caps[index] = min(lengths[index], share)
        remaining -= caps[index]
        left -= 1
    return caps


def truncate_references(
    ctx: RunContext,
    agent: AgentSpec,
    references: Sequence[Reference],
    policy: ContextPolicy,
    instruction: str | None = None,
) -> tuple[list[Reference], str | None]:
    """References shortened (and if need be fewer) so that the call fits; and a note if changed."""
    window = policy.window_of(agent.model)
    refs = list(references)
    if window is None or fits(ctx, agent, refs, policy, instruction):
        return refs, None
    empty = [Reference("", r.partial) for r in refs]
    free = window - reserve_of(ctx, agent, policy)
    while refs:
        available = free - prompt_tokens(ctx, agent, empty[: len(refs)], instruction)
        if available >= MIN_REFERENCE_TOKENS * len(refs) or len(refs) == 1:
            break
        refs.pop()
    before = sum(estimate_tokens(r.text) for r in references)
    if not refs:
        return [], f"{agent.model}: no reference fits its context window of {window} tokens"
    # estimate_tokens counts about four characters a token.
    caps = _caps([len(r.text) for r in refs], max(available, 0) * 4)
    shortened = [
        Reference(_cut_middle(r.text, cap), r.partial) for r, cap in zip(refs, caps, strict=True)
    ]
    after = sum(estimate_tokens(r.text) for r in shortened)
    dropped = len(references) - len(refs)
    note = (
        f"references for {agent.model} truncated to fit its context window of {window} tokens: "
        f"about {before} -> {after} tokens" + (f", {dropped} answer(s) left out" if dropped else "")
    )
    return shortened, note


def fit_for_agent(
    ctx: RunContext,
    agent: AgentSpec,
    references: Sequence[Reference],
    policy: ContextPolicy | None,
    instruction: str | None = None,
    *,
    label: str | None = None,
) -> list[Reference]:
    """References ``agent`` can take under ``policy`` (all of them without one).

    What was cut is noted in the run's notes, after ``label`` (the step that
    makes the call), so a shortened answer is never a silent one.
    """
    refs = list(references)
    if policy is None:
        return refs
    refs, note = truncate_references(ctx, agent, refs, policy, instruction)
    if note:
        ctx.notes.append(note if label is None else f"{label}: {note}")
    return refs


def fit_for_layer(
    ctx: RunContext,
    layer: LayerSpec,
    references: Sequence[Reference],
    policy: ContextPolicy | None,
) -> list[Reference]:
    """References every agent of ``layer`` can take (truncated for the smallest window)."""
    refs = list(references)
    if policy is None or not refs:
        return refs
    tightest = min(
        layer.agents,
        key=lambda a: (policy.window_of(a.model) or 1 << 40) - reserve_of(ctx, a, policy),
    )
    return fit_for_agent(ctx, tightest, refs, policy, label=f"layer {len(ctx.layers) + 1}")
