"""One agent's call: concurrency limit, per-attempt timeout, retries, streaming, accounting.

A call never raises a provider error: it returns an :class:`AgentResult` whose
``error`` says what went wrong after the last attempt, so a layer can go on
with its other agents. Cancellation is the one thing that propagates.
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field, replace
from functools import partial

from moa.engine.breaker import CircuitBreaker
from moa.engine.result import AgentResult, AgentRole
from moa.engine.spec import HedgeSpec, Price, RetryPolicy
from moa.errors import (
    CacheMissError,
    CircuitOpenError,
    EmptyAnswerError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
)
from moa.providers.base import Provider
from moa.types import CompletionRequest, GenerationParams, Message, Usage, estimate_tokens

__all__ = ["AgentCall", "CallProgress", "Hedge", "backoff_delay", "call_agent", "stopped_result"]

_Limits = dict[Hashable, asyncio.Semaphore]
_LIMITERS: weakref.WeakKeyDictionary[Provider, weakref.WeakKeyDictionary[object, _Limits]]
_LIMITERS = weakref.WeakKeyDictionary()


def _limiter(provider: Provider, request: CompletionRequest) -> AbstractAsyncContextManager[object]:
    """The provider's concurrency limit for ``request`` on the running event loop."""
    if not provider.max_concurrency:
        return nullcontext()
    per_loop = _LIMITERS.setdefault(provider, weakref.WeakKeyDictionary())
    loop = asyncio.get_running_loop()
    limits = per_loop.get(loop)
    if limits is None:
        limits = per_loop[loop] = {}
    key = provider.concurrency_key(request)
    semaphore = limits.get(key)
    if semaphore is None:
        semaphore = limits[key] = asyncio.Semaphore(provider.max_concurrency)
    return semaphore


def backoff_delay(policy: RetryPolicy, attempt: int, error: BaseException) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    delay = min(policy.backoff_max, policy.backoff_initial * policy.multiplier ** (attempt - 1))
    if policy.jitter:
        delay = random.uniform(0, delay)
    if isinstance(error, RateLimitError) and error.retry_after is not None:
        delay = max(delay, min(error.retry_after, policy.backoff_max))
    return delay


@dataclass
class CallProgress:
    """What a running call has produced so far, readable by whoever may stop it."""

    text: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    attempts: int = 0
    queued: float = 0.0
    """Seconds spent waiting for a free slot of the provider's concurrency limit."""

    @property
    def so_far(self) -> str:
        return "".join(self.text)


@dataclass(frozen=True)
class AgentCall:
    """Everything needed to call one agent once (with retries)."""

    provider: Provider
    model_id: str
    model: str
    messages: tuple[Message, ...]
    params: GenerationParams
    label: str
    layer: int
    index: int
    role: AgentRole
    timeout: float
    retry: RetryPolicy
    price: Price | None = None
    continue_final: bool = False
    notes: tuple[str, ...] = ()
    deadline: float | None = None
    """Seconds for the whole call, retries included; then it stops and keeps its text."""
    hedge: Hedge | None = None
    stream: bool = False
    """Stream even with no listener, so that a call stopped early keeps what it wrote."""
    breaker: CircuitBreaker | None = None
    """The provider's circuit breaker: asked before every attempt, told how it went."""


@dataclass(frozen=True)
class Hedge:
    """The backup call raced against a slow call (see :class:`~moa.engine.spec.HedgeSpec`)."""

    backup: AgentCall
    spec: HedgeSpec


async def call_agent(
    call: AgentCall,
    *,
    on_delta: Callable[[str], None] | None = None,
    progress: CallProgress | None = None,
) -> AgentResult:
    """Run ``call`` to completion, final failure or its deadline; see the module docstring."""
    progress = progress or CallProgress()
    if call.deadline is None:
        return await _call_with_retries(call, on_delta, progress)
    try:
        return await asyncio.wait_for(
            _call_with_retries(call, on_delta, progress), max(call.deadline, 0.0)
        )
    except asyncio.TimeoutError:
        return stopped_result(call, progress, f"agent deadline of {call.deadline:g}s passed")


async def _call_with_retries(
    call: AgentCall, on_delta: Callable[[str], None] | None, progress: CallProgress
) -> AgentResult:
    request = CompletionRequest(call.model, call.messages, call.params, call.continue_final)
    last_error: BaseException | None = None
    usage = Usage()
    breaker = call.breaker
    for attempt in range(1, call.retry.max_attempts + 1):
        progress.attempts = attempt
        progress.text.clear()
        ticket: int | None = None
        try:
            if breaker is not None:
                ticket = breaker.check(call.model)
            # The breaker counts an attempt as a success once its first token is in.
            answered = None if breaker is None else partial(breaker.succeeded, ticket)
            waiting = time.perf_counter()
            async with _limiter(call.provider, request):
                progress.queued += time.perf_counter() - waiting
                attempt_usage, finish = await _attempt(call, request, progress, on_delta, answered)
            usage = usage + attempt_usage
            if not call.continue_final and not progress.so_far.strip():
                raise EmptyAnswerError(
                    f"{call.model} answered with no text (finish reason {finish or 'none'})",
                    provider=call.provider.name,
                    model=call.model,
                )
            if breaker is not None:
                breaker.succeeded(ticket)
            return _result(call, progress, usage, finish_reason=finish)
        except CircuitOpenError as exc:
            return _result(call, progress, usage, error=exc)
        except CacheMissError:  # a replay short of a call is not this agent's failure: it ends
            if breaker is not None and ticket is not None:
                breaker.released(ticket)
            raise
        except asyncio.TimeoutError as exc:
            waited = "a first token" if progress.first_token is None else "the next token"
            last_error = ProviderTimeoutError(
                f"waited {call.timeout:g}s for {waited}",
                provider=call.provider.name,
                model=call.model,
            )
            last_error.__cause__ = exc
        except ProviderError as exc:
            last_error = exc
        except Exception as exc:  # an unexpected bug in a provider must not sink the layer
            last_error = exc
        except BaseException:  # cancelled: the attempt gives its place in the breaker's order back
            if breaker is not None and ticket is not None:
                breaker.released(ticket)
            raise
        if breaker is not None:
            breaker.failed(last_error, ticket)
        if not isinstance(last_error, EmptyAnswerError):  # its usage is counted already
            # A failed attempt still cost its prompt (when anything was sent at all).
            usage = usage + Usage(calls=1)
        if progress.text or not _retryable(last_error) or attempt == call.retry.max_attempts:
            break
        await asyncio.sleep(backoff_delay(call.retry, attempt, last_error))
    assert last_error is not None
    return _result(call, progress, usage, error=last_error)


def _retryable(error: BaseException) -> bool:
    return isinstance(error, ProviderError) and error.retryable


async def _attempt(
    call: AgentCall,
    request: CompletionRequest,
    progress: CallProgress,
    on_delta: Callable[[str], None] | None,
    answered: Callable[[], None] | None = None,
) -> tuple[Usage, str | None]:
    """One attempt; ``answered`` is called when its first text is in."""
    usage: Usage | None = None
    finish: str | None = None
    streamed = (
        call.stream
        or call.continue_final
        or call.deadline is not None
        or call.provider.prefers_streaming
    )
    if on_delta is None and not streamed:
        completion = await asyncio.wait_for(call.provider.complete(request), call.timeout)
        if completion.text:
            progress.first_token = progress.first_token or time.perf_counter()
            if answered is not None:
                answered()
        progress.text.append(completion.text)
        usage, finish = completion.usage, completion.finish_reason
    else:
        # A stream's timeout bounds each wait (first token, then between chunks), not the
        # whole answer: a long answer that keeps coming is progress, a stall is not.
        chunks = call.provider.stream(request)
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(anext(chunks), call.timeout)
                except StopAsyncIteration:
                    break
                if chunk.text:
                    if progress.first_token is None:
                        progress.first_token = time.perf_counter()
                    if answered is not None and len(progress.text) == 0:
                        answered()
                    progress.text.append(chunk.text)
                    if on_delta is not None:
                        on_delta(chunk.text)
                usage = chunk.usage or usage
                finish = chunk.finish_reason or finish
        finally:
            closing = getattr(chunks, "aclose", None)
            if closing is not None:
                await closing()
    if usage is None:
        usage = _estimated_usage(call.messages, progress.so_far)
    return Usage(usage.prompt_tokens, usage.completion_tokens, max(usage.calls, 1)), finish


def _estimated_usage(messages: Sequence[Message], text: str) -> Usage:
    return Usage(sum(estimate_tokens(m.content) for m in messages), estimate_tokens(text), 1)


def _result(
    call: AgentCall,
    progress: CallProgress,
    usage: Usage,
    *,
    finish_reason: str | None = None,
    error: BaseException | None = None,
    partial: bool = False,
) -> AgentResult:
    now = time.perf_counter()
    cost = call.price.cost(usage.prompt_tokens, usage.completion_tokens) if call.price else None
    return AgentResult(
        agent=call.label,
        model=call.model_id,
        layer=call.layer,
        index=call.index,
        role=call.role,
        output=None if error is not None else progress.so_far,
        error=None if error is None else f"{type(error).__name__}: {error}",
        error_type=None if error is None else type(error).__name__,
        usage=usage,
        latency_s=now - progress.started,
        ttft_s=None if progress.first_token is None else progress.first_token - progress.started,
        queued_s=progress.queued,
        attempts=progress.attempts,
        finish_reason=finish_reason,
        cost=cost,
        partial=partial,
        notes=call.notes,
        messages=call.messages,
        params=call.params,
        started_at=time.time() - (now - progress.started),
    )


def stopped_result(
    call: AgentCall, progress: CallProgress, reason: str, *, keep_text: bool = True
) -> AgentResult:
    """The result of a call stopped on purpose; any text it wrote is kept, marked partial.

    With ``keep_text=False`` the call is reported as stopped with no answer,
    though the tokens it wrote still count in its usage.
    """
    text = progress.so_far
    usage = _estimated_usage(call.messages, text) if progress.attempts else Usage()
    result = _result(call, progress, usage, partial=True)
    if text and keep_text:
        return replace(result, notes=(*call.notes, reason))
    return replace(result, output=None, error=f"Stopped: {reason}", error_type="Stopped")
