"""The Mixture: run a :class:`MixtureSpec` over a conversation.

:meth:`Mixture.astream` is the one orchestration path; :meth:`Mixture.arun`
consumes it, and :meth:`Mixture.run` / :meth:`Mixture.stream` are thin sync
facades. A Mixture is also a :class:`~moa.providers.base.Provider` (see
:class:`MixtureProvider`), so mixtures nest.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import Any

from moa.engine.budget import LatencyHistory
from moa.engine.context import RunContext
from moa.engine.events import Done, Event, TextDelta
from moa.engine.overrides import RunOverrides, parse_overrides
from moa.engine.result import Result
from moa.engine.spec import MixtureSpec
from moa.engine.strategy import Strategy, get_strategy
from moa.errors import DeadlineExceededError, ModelNotInstalledError
from moa.providers.base import Provider
from moa.providers.registry import ProviderRegistry
from moa.types import (
    Completion,
    CompletionChunk,
    CompletionRequest,
    GenerationParams,
    Message,
    as_messages,
)

__all__ = ["Mixture", "MixtureProvider", "Prompt", "check_mixtures", "check_models"]

Prompt = str | Message | dict[str, Any] | list[Message] | list[dict[str, Any]] | tuple[Message, ...]

_END = object()


def _strategy_of(spec: MixtureSpec) -> Strategy:
    entry = get_strategy(spec.strategy.type)
    return entry.build(spec.strategy.options())


class Mixture:
    """Layers of agents and an aggregator, bound to the providers that serve them."""

    def __init__(
        self,
        spec: MixtureSpec,
        providers: ProviderRegistry | None = None,
        *,
        strategy: Strategy | None = None,
    ) -> None:
        self.spec = spec
        self.providers = providers or ProviderRegistry()
        self.strategy: Strategy = strategy or _strategy_of(spec)
        self.latency = LatencyHistory()
        """Latencies observed over this mixture's runs (hedging at a percentile uses them)."""

    @property
    def name(self) -> str:
        return self.spec.name

    def variant(self, overrides: RunOverrides | Mapping[str, Any]) -> Mixture:
        """This mixture run another way (see :class:`~moa.engine.overrides.RunOverrides`).

        The variant shares the providers and the latency history, so it is cheap
        to make one per request: ``mixture.variant({"strategy": {"type": "chunked"}})``.
        """
        changes = parse_overrides(overrides)
        strategy = self.strategy if changes.strategy is None else None
        other = Mixture(changes.apply(self.spec), self.providers, strategy=strategy)
        other.latency = self.latency
        return other

    def check(self) -> None:
        """Raise the error that would stop this mixture before its first call, if any.

        Every model id must resolve (its provider is known and has its key), its
        provider must know of nothing missing (:meth:`Provider.check_model
        <moa.providers.base.Provider.check_model>`: a local model file that is not
        installed), and the strategy's ``requires`` check, when it registered one,
        must pass. Makes no call, loads no model and never depends on the prompt,
        so a server can ask it for ``/v1/models``.
        """
        check_models(self.spec.model_ids(), self.providers)
        requires = get_strategy(self.spec.strategy.type).requires
        if requires is not None:
            requires(self.spec, self.providers)

    async def astream(
        self,
        prompt: Prompt,
        *,
        params: GenerationParams | None = None,
        agent_deltas: bool = False,
        trace_id: str | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Run the mixture, yielding events as they happen; the last one is :class:`Done`.

        ``params`` apply to the final answer (its ``extra`` goes to every call);
        ``agent_deltas`` also streams the intermediate agents' text. ``trace_id``
        (32 hex digits) names the run, e.g. after the caller's OpenTelemetry trace;
        by default a new random one does.
        """
        messages = as_messages(prompt)
        self.check()
        queue: asyncio.Queue[object] = asyncio.Queue()
        ctx = RunContext(
            spec=self.spec,
            providers=self.providers,
            messages=messages,
            emit=queue.put_nowait,
            request_params=params or GenerationParams(),
            agent_deltas=agent_deltas,
            trace_id=trace_id or uuid.uuid4().hex,
            latency=self.latency,
        )
        task = asyncio.create_task(self._execute(ctx))
        task.add_done_callback(lambda _: queue.put_nowait(_END))
        try:
            while (item := await queue.get()) is not _END:
                yield item  # type: ignore[misc]
            yield Done(task.result())
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _execute(self, ctx: RunContext) -> Result:
        try:
            final = await asyncio.wait_for(self.strategy(ctx), self.spec.deadline)
        except asyncio.TimeoutError as exc:
            raise DeadlineExceededError(
                f"mixture {self.name!r} did not finish within its deadline of {self.spec.deadline}s"
            ) from exc
        return Result(
            output=final.output or "",
            layers=tuple(ctx.layers),
            aggregator=final,
            mixture=self.name,
            trace_id=ctx.trace_id,
            latency_s=(latency := time.perf_counter() - ctx.started),
            ttft_s=None if ctx.first_token is None else ctx.first_token - ctx.started,
            extra_calls=tuple(ctx.extra_calls),
            notes=tuple(ctx.notes),
            started_at=time.time() - latency,
        )

    async def arun(
        self,
        prompt: Prompt,
        *,
        params: GenerationParams | None = None,
        trace_id: str | None = None,
    ) -> Result:
        """Run the mixture and return its :class:`Result`."""
        async for event in self.astream(prompt, params=params, trace_id=trace_id):
            if isinstance(event, Done):
                return event.result
        raise AssertionError("a run always ends with a Done event")  # pragma: no cover

    def run(
        self,
        prompt: Prompt,
        *,
        params: GenerationParams | None = None,
        trace_id: str | None = None,
    ) -> Result:
        """Blocking :meth:`arun` (not from inside a running event loop)."""
        return asyncio.run(self._arun_and_close(prompt, params, trace_id))

    async def _arun_and_close(
        self, prompt: Prompt, params: GenerationParams | None, trace_id: str | None
    ) -> Result:
        try:
            return await self.arun(prompt, params=params, trace_id=trace_id)
        finally:
            await self.providers.aclose()

    def stream(
        self,
        prompt: Prompt,
        *,
        params: GenerationParams | None = None,
        agent_deltas: bool = False,
        trace_id: str | None = None,
    ) -> Iterator[Event]:
        """Blocking :meth:`astream`: events as they happen, on a private event loop."""
        loop = asyncio.new_event_loop()
        events = self.astream(prompt, params=params, agent_deltas=agent_deltas, trace_id=trace_id)
        try:
            while True:
                try:
                    yield loop.run_until_complete(events.__anext__())
                except StopAsyncIteration:
                    break
        finally:
            loop.run_until_complete(events.aclose())
            loop.run_until_complete(self.providers.aclose())
            loop.close()

    async def aclose(self) -> None:
        await self.providers.aclose()

    def as_provider(self, name: str | None = None) -> MixtureProvider:
        return MixtureProvider(self, name or self.name)


class MixtureProvider(Provider):
    """A mixture used as a model: ``registry.add("moa", mixture.as_provider())``."""

    def __init__(self, mixture: Mixture, name: str) -> None:
        self.mixture = mixture
        self.name = name

    def check_model(self, model: str) -> None:
        self.mixture.check()

    async def stream(self, request: CompletionRequest) -> AsyncIterator[CompletionChunk]:
        async for event in self.mixture.astream(request.messages, params=request.params):
            if isinstance(event, TextDelta):
                yield CompletionChunk(event.text)
            elif isinstance(event, Done):
                result = event.result
                yield CompletionChunk("", result.usage, result.aggregator.finish_reason)

    async def complete(self, request: CompletionRequest) -> Completion:
        result = await self.mixture.arun(request.messages, params=request.params)
        return Completion(result.output, result.usage, result.aggregator.finish_reason, self.name)


def _told_together(checks: Iterable[Callable[[], None]]) -> None:
    """Run every check; the local models not installed that they find are told together,
    with one command that pulls them all. Any other error stops at once."""
    missing: list[ModelNotInstalledError] = []
    for check in checks:
        try:
            check()
        except ModelNotInstalledError as exc:
            missing.append(exc)
    if missing:
        raise ModelNotInstalledError.combine(missing)


def check_models(model_ids: Iterable[str], providers: ProviderRegistry) -> None:
    """Every model id resolves and its provider knows of nothing missing (a local model file
    that is not installed); the missing ones are told together."""

    def check(model_id: str) -> None:
        provider, model = providers.resolve(model_id)
        provider.check_model(model)

    _told_together(partial(check, model_id) for model_id in dict.fromkeys(model_ids))


def check_mixtures(mixtures: Iterable[Mixture]) -> None:
    """:meth:`Mixture.check` for each, before a run that uses them all: local models that are
    not installed are told together, however many mixtures use them."""
    _told_together(mixture.check for mixture in mixtures)
