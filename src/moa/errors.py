"""The exception tree of ``moa``.

Every error the library raises on purpose derives from :class:`MoAError`::

    MoAError
    ├── ConfigError                  bad configuration: names the field and what to do
    │   ├── MissingAPIKeyError       a provider's key is not set (names the env var)
    │   ├── ModelNotInstalledError   a local model is missing (names the install command)
    │   └── CacheMissError           a cache-only run needed a call its cache does not hold
    ├── ProviderError                one upstream call failed
    │   ├── ProviderTimeoutError     the call did not finish within its timeout
    │   ├── RateLimitError           HTTP 429; carries ``retry_after`` seconds when given
    │   ├── ProviderStatusError      any other HTTP error status; carries ``status_code``
    │   ├── ProviderConnectionError  the endpoint could not be reached
    │   ├── EmptyAnswerError         the model answered with no text at all
    │   ├── CircuitOpenError         skipped: the provider failed too often just now
    │   └── FeatureUnavailableError  the provider cannot do what the mixture asks of it
    ├── QuorumError                  too few agents of a layer succeeded; lists every failure
    ├── AggregationError             the final aggregator failed
    └── DeadlineExceededError        the whole run ran out of time

Errors raised because of another exception are raised ``from`` it, so the
underlying cause is always one ``__cause__`` away.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moa.engine.result import AgentResult

__all__ = [
    "AggregationError",
    "CacheMissError",
    "CircuitOpenError",
    "ConfigError",
    "DeadlineExceededError",
    "EmptyAnswerError",
    "FeatureUnavailableError",
    "MissingAPIKeyError",
    "MoAError",
    "ModelNotInstalledError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderStatusError",
    "ProviderTimeoutError",
    "QuorumError",
    "RateLimitError",
]


class MoAError(Exception):
    """Base class of every error raised by ``moa``."""


class ConfigError(MoAError):
    """The configuration is invalid; the message names the field and the fix."""


class MissingAPIKeyError(ConfigError):
    """A provider needs an API key and none was given."""

    def __init__(self, provider: str, env_var: str) -> None:
        self.provider = provider
        self.env_var = env_var
        super().__init__(
            f"provider {provider!r} needs an API key: set the environment variable {env_var} "
            f"(export {env_var}=...) or give providers.{provider}.api_key_env in the config"
        )


class ModelNotInstalledError(ConfigError):
    """Local model files are not present (``models``: their names, ``model``: the first)."""

    def __init__(self, model: str, install_command: str, *, others: Sequence[str] = ()) -> None:
        self.models = (model, *others)
        self.model = model
        self.install_command = install_command
        if others:
            names = ", ".join(map(repr, self.models))
            super().__init__(f"local models {names} are not installed; run: {install_command}")
        else:
            super().__init__(f"local model {model!r} is not installed; run: {install_command}")

    @classmethod
    def combine(cls, errors: Sequence[ModelNotInstalledError]) -> ModelNotInstalledError:
        """One error for every model missing, with one command that pulls them all."""
        names = tuple(dict.fromkeys(name for error in errors for name in error.models))
        if len(names) == 1:
            return errors[0]
        return cls(names[0], "moa models pull " + " ".join(names), others=names[1:])


class CacheMissError(ConfigError):
    """A run that may only replay its call cache (``--cache-only``) needed a call it lacks.

    Not one agent's failure: a replay that went on without the call would
    report something other than the run it replays, so the engine lets it end
    the run.
    """

    def __init__(self, model_id: str, cache: str) -> None:
        self.model_id = model_id
        super().__init__(
            f"{model_id}: a call the call cache {cache} does not hold, and --cache-only forbids "
            "calling any model. Import the run's call log first (moa cache import FILE), or "
            "leave out --cache-only to make the call."
        )


class ProviderError(MoAError):
    """One call to a model provider failed."""

    retryable: bool = False

    def __init__(self, message: str, *, provider: str = "", model: str = "") -> None:
        self.provider = provider
        self.model = model
        super().__init__(message)


class ProviderTimeoutError(ProviderError):
    """The call did not complete within its timeout."""

    retryable = True


class RateLimitError(ProviderError):
    """The provider answered 429 Too Many Requests."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, model=model)
        self.retry_after = retry_after


class ProviderStatusError(ProviderError):
    """The provider answered with an HTTP error status other than 429."""

    def __init__(
        self, message: str, *, status_code: int, provider: str = "", model: str = ""
    ) -> None:
        super().__init__(message, provider=provider, model=model)
        self.status_code = status_code
        self.retryable = status_code >= 500 or status_code in (408, 409)


class ProviderConnectionError(ProviderError):
    """The provider could not be reached."""

    retryable = True


class EmptyAnswerError(ProviderError):
    """The call succeeded but its answer has no text: nothing to build on or to show."""

    retryable = True


class CircuitOpenError(ProviderError):
    """The call was not sent: its provider's last calls all failed, and it rests for a while."""


class FeatureUnavailableError(ProviderError):
    """The provider cannot perform what was asked of it (e.g. continuing a message)."""


class QuorumError(MoAError):
    """Fewer agents of a layer succeeded than its ``min_ok`` requires."""

    def __init__(self, layer: int, min_ok: int, failures: Sequence[AgentResult]) -> None:
        self.layer = layer
        self.min_ok = min_ok
        self.failures = list(failures)
        details = "; ".join(f"{f.agent} ({f.model}): {f.error}" for f in self.failures)
        super().__init__(
            f"layer {layer}: fewer than {min_ok} agent(s) succeeded; failures: {details}"
        )


class AggregationError(MoAError):
    """The final aggregator could not produce an answer."""


class DeadlineExceededError(MoAError):
    """The run as a whole exceeded its deadline."""
