"""Put previous answers in front of an agent as numbered references in its system message."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

from moa.types import Message

__all__ = ["Reference", "default_instruction", "with_references"]


@dataclass(frozen=True)
class Reference:
    """One previous answer shown to an agent."""

    text: str
    partial: bool = False
    """Only a prefix of the answer exists yet (chunk-wise aggregation, stopped calls)."""


@cache
def default_instruction() -> str:
    """The shipped aggregate-and-synthesize instruction (package data ``prompts/aggregate.txt``)."""
    return resources.files("moa").joinpath("prompts/aggregate.txt").read_text("utf-8").strip()


def render_references(references: Sequence[Reference], instruction: str) -> str:
    blocks = [instruction.strip()]
    for number, ref in enumerate(references, start=1):
        tag = f"Candidate answer {number}" + (
            " (unfinished, still being written)" if ref.partial else ""
        )
        blocks.append(
            f"<<< {tag} >>>\n{ref.text.strip()}\n<<< end of candidate answer {number} >>>"
        )
    return "\n\n".join(blocks)


def with_references(
    messages: Sequence[Message],
    references: Sequence[Reference],
    *,
    instruction: str | None = None,
    agent_system: str | None = None,
) -> tuple[Message, ...]:
    """The conversation as one agent sees it.

    The user's own system message is kept and comes first; the agent's role
    prompt and then the instruction with the numbered references are appended
    to it. Every other message stays a real message, so multi-turn history is
    never flattened into text.
    """
    parts: list[str] = []
    rest = list(messages)
    if rest and rest[0].role == "system":
        parts.append(rest.pop(0).content)
    if agent_system:
        parts.append(agent_system)
    if references:
        parts.append(render_references(references, instruction or default_instruction()))
    if not parts:
        return tuple(rest)
    return (Message("system", "\n\n".join(parts)), *rest)
