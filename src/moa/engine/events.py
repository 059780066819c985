"""Typed events of a streamed run, discriminated by their ``type`` field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from moa.engine.result import AgentResult, LayerResult, Result

__all__ = [
    "AgentDelta",
    "AgentDone",
    "AgentFailed",
    "Done",
    "Event",
    "LayerDone",
    "LayerStarted",
    "TextDelta",
]


@dataclass(frozen=True)
class LayerStarted:
    """A layer (or the aggregation stage) starts; ``agents`` are the labels of its agents.

    A layer drawn in waves (an adaptive vote) starts once per wave: a later wave names only
    the agents it adds, and ``first_index`` is the position of the first of them in the
    layer (the count of agents already in it). The layer's :class:`LayerDone` comes once,
    after its last wave.
    """

    type: ClassVar[Literal["layer_started"]] = "layer_started"
    layer: int
    role: Literal["proposer", "aggregator"]
    agents: tuple[str, ...]
    first_index: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "layer": self.layer,
            "role": self.role,
            "agents": self.agents,
            "first_index": self.first_index,
        }


@dataclass(frozen=True)
class AgentDelta:
    """A piece of an intermediate agent's answer (only when agent deltas are requested)."""

    type: ClassVar[Literal["agent_delta"]] = "agent_delta"
    layer: int
    index: int
    agent: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "layer": self.layer,
            "index": self.index,
            "agent": self.agent,
            "text": self.text,
        }


@dataclass(frozen=True)
class AgentDone:
    """An agent answered."""

    type: ClassVar[Literal["agent_done"]] = "agent_done"
    result: AgentResult

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **self.result.to_dict()}


@dataclass(frozen=True)
class AgentFailed:
    """An agent failed after all retries; the layer goes on without it."""

    type: ClassVar[Literal["agent_failed"]] = "agent_failed"
    result: AgentResult

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **self.result.to_dict()}


@dataclass(frozen=True)
class LayerDone:
    """Every agent of a layer has finished (answered, failed or been stopped); once a layer.

    ``layer`` holds all of them, every wave's agents included.
    """

    type: ClassVar[Literal["layer_done"]] = "layer_done"
    layer: LayerResult

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **self.layer.to_dict()}


@dataclass(frozen=True)
class TextDelta:
    """A piece of the final answer."""

    type: ClassVar[Literal["text_delta"]] = "text_delta"
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "text": self.text}


@dataclass(frozen=True)
class Done:
    """The run finished; ``result`` holds everything."""

    type: ClassVar[Literal["done"]] = "done"
    result: Result

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "result": self.result.to_dict()}


Event = LayerStarted | AgentDelta | AgentDone | AgentFailed | LayerDone | TextDelta | Done
