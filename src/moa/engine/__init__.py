"""The orchestration engine: specs, the run context, the mixture, its results and events."""

from moa.engine.events import (
    AgentDelta,
    AgentDone,
    AgentFailed,
    Done,
    Event,
    LayerDone,
    LayerStarted,
    TextDelta,
)
from moa.engine.mixture import Mixture, MixtureProvider, Strategy, layered
from moa.engine.references import Reference, default_instruction, with_references
from moa.engine.result import AgentResult, LayerResult, Result
from moa.engine.spec import AgentSpec, LayerSpec, MixtureSpec, Price, RetryPolicy

__all__ = [
    "AgentDelta",
    "AgentDone",
    "AgentFailed",
    "AgentResult",
    "AgentSpec",
    "Done",
    "Event",
    "LayerDone",
    "LayerResult",
    "LayerSpec",
    "LayerStarted",
    "Mixture",
    "MixtureProvider",
    "MixtureSpec",
    "Price",
    "Reference",
    "Result",
    "RetryPolicy",
    "Strategy",
    "TextDelta",
    "default_instruction",
    "layered",
    "with_references",
]
