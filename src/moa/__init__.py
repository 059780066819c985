"""mixture-of-agents: several LLMs answering in layers, one synthesized answer.

>>> from moa import Mixture, MixtureSpec
>>> spec = MixtureSpec.model_validate({
...     "layers": [[{"model": "fake:a"}, {"model": "fake:b"}]],
...     "aggregator": {"model": "fake:agg"},
... })
"""

from moa.engine import (
    AgentDelta,
    AgentDone,
    AgentFailed,
    AgentResult,
    AgentSpec,
    Done,
    Event,
    LayerDone,
    LayerResult,
    LayerSpec,
    LayerStarted,
    Mixture,
    MixtureProvider,
    MixtureSpec,
    Price,
    Reference,
    Result,
    RetryPolicy,
    TextDelta,
)
from moa.errors import (
    AggregationError,
    CacheMissError,
    ConfigError,
    DeadlineExceededError,
    FeatureUnavailableError,
    MissingAPIKeyError,
    MoAError,
    ModelNotInstalledError,
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
    ProviderTimeoutError,
    QuorumError,
    RateLimitError,
)
from moa.providers.base import Provider
from moa.providers.registry import ProviderRegistry
from moa.providers.settings import LocalSettings, ProviderSettings
from moa.types import (
    Completion,
    CompletionChunk,
    CompletionRequest,
    GenerationParams,
    Message,
    Usage,
)

__version__ = "0.1.0"

__all__ = [
    "AgentDelta",
    "AgentDone",
    "AgentFailed",
    "AgentResult",
    "AgentSpec",
    "AggregationError",
    "CacheMissError",
    "Completion",
    "CompletionChunk",
    "CompletionRequest",
    "ConfigError",
    "DeadlineExceededError",
    "Done",
    "Event",
    "FeatureUnavailableError",
    "GenerationParams",
    "LayerDone",
    "LayerResult",
    "LayerSpec",
    "LayerStarted",
    "LocalSettings",
    "Message",
    "MissingAPIKeyError",
    "Mixture",
    "MixtureProvider",
    "MixtureSpec",
    "MoAError",
    "ModelNotInstalledError",
    "Price",
    "Provider",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderRegistry",
    "ProviderSettings",
    "ProviderStatusError",
    "ProviderTimeoutError",
    "QuorumError",
    "RateLimitError",
    "Reference",
    "Result",
    "RetryPolicy",
    "TextDelta",
    "Usage",
    "__version__",
]
