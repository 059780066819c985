"""Plain data exchanged between the engine and the providers.

These types carry no behaviour beyond small conveniences; they are frozen so
that a request or a completion can be shared between concurrent agents safely.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = [
    "Completion",
    "CompletionChunk",
    "CompletionRequest",
    "GenerationParams",
    "Message",
    "Role",
    "Usage",
    "as_messages",
]

Role = Literal["system", "user", "assistant"]
ROLES: frozenset[str] = frozenset(("system", "user", "assistant"))


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: Role
    content: str
    name: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"message role must be one of {sorted(ROLES)}, got {self.role!r}")
        if not isinstance(self.content, str):
            raise TypeError(f"message content must be a string, got {type(self.content).__name__}")

    def to_dict(self) -> dict[str, str]:
        out = {"role": self.role, "content": self.content}
        if self.name:
            out["name"] = self.name
        return out


def as_messages(
    prompt: str | Message | Mapping[str, Any] | Iterable[Message | Mapping[str, Any]],
) -> tuple[Message, ...]:
    """Normalise a prompt string, a message, or a list of messages/dicts."""
    if isinstance(prompt, str):
        return (Message("user", prompt),)
    if isinstance(prompt, Message):
        return (prompt,)
    if isinstance(prompt, Mapping):
        return (_message_from_mapping(prompt),)
    out = tuple(m if isinstance(m, Message) else _message_from_mapping(m) for m in prompt)
    if not out:
        raise ValueError("a conversation needs at least one message")
    return out


def _message_from_mapping(data: Mapping[str, Any]) -> Message:
    try:
        return Message(role=data["role"], content=data["content"], name=data.get("name"))
    except KeyError as exc:
        raise ValueError(f"a message needs 'role' and 'content', missing {exc}") from exc


@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters of one call. ``None`` means "provider default"."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def merged(self, override: GenerationParams) -> GenerationParams:
        """Return these params with every non-``None`` field of ``override`` applied."""
        changes: dict[str, Any] = {}
        for name in ("temperature", "top_p", "max_tokens", "stop", "seed"):
            value = getattr(override, name)
            if value is not None:
                changes[name] = value
        if override.extra:
            changes["extra"] = {**self.extra, **override.extra}
        return replace(self, **changes)


@dataclass(frozen=True)
class CompletionRequest:
    """One call to one model of one provider."""

    model: str
    messages: tuple[Message, ...]
    params: GenerationParams = field(default_factory=GenerationParams)
    continue_final: bool = False
    """Continue the final assistant message instead of starting a new one."""


@dataclass(frozen=True)
class Usage:
    """Token counts; ``calls`` counts the model calls behind them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.calls + other.calls,
        )

    @staticmethod
    def sum(usages: Iterable[Usage]) -> Usage:
        total = Usage()
        for usage in usages:
            total = total + usage
        return total

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "calls": self.calls,
        }


@dataclass(frozen=True)
class Completion:
    """A finished answer from one call."""

    text: str
    usage: Usage
    finish_reason: str | None = None
    model: str = ""


@dataclass(frozen=True)
class CompletionChunk:
    """A piece of a streamed answer; the last chunk may carry usage and finish reason."""

    text: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token) for when a server reports none."""
    return max(1, (len(text) + 3) // 4) if text else 0


def message_chars(messages: Sequence[Message]) -> int:
    return sum(len(m.content) for m in messages)
