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
from moa.engine.mixture import Mixture, MixtureProvider
from moa.engine.overrides import RunOverrides
from moa.engine.references import Reference, default_instruction, with_references
from moa.engine.result import AgentResult, LayerResult, Result
from moa.engine.spec import (
    AgentSpec,
    EarlyExitSpec,
    HedgeSpec,
    LayerSpec,
    MixtureSpec,
    Price,
    RetryPolicy,
    StrategySpec,
)
from moa.engine.strategy import (
    Strategy,
    StrategyRequirement,
    register_strategy,
    strategy_names,
)

__all__ = [
    "AgentDelta",
    "AgentDone",
    "AgentFailed",
    "AgentResult",
    "AgentSpec",
    "Done",
    "EarlyExitSpec",
    "Event",
    "HedgeSpec",
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
    "RunOverrides",
    "Strategy",
    "StrategyRequirement",
    "StrategySpec",
    "TextDelta",
    "default_instruction",
    "register_strategy",
    "strategy_names",
    "with_references",
]
