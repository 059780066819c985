"""Chunk-wise ("staircase") aggregation: the aggregator writes while the proposers still write.

In the paper's MoA no token can be shown before every proposer has finished.
Here the earlier layers run as usual, but the last proposer layer streams, and
the aggregator starts as soon as every live proposer has written its first
chunk. Each next chunk of the final answer is written over the proposers'
longer prefixes (references marked unfinished) by *continuing* the aggregator's
own text so far, so the user sees one answer growing. Before each chunk the
aggregator waits until every live proposer has written at least as many tokens
as the answer will have after it, so it never writes ahead of its references;
chunks grow (``growth``) so that a long answer takes few calls. Once every
proposer is done, the rest is written in one go.

The aggregator's provider must continue a final assistant message
(``Provider.supports_continue``): the local provider can, and OpenAI-compatible
servers such as vLLM and the llama.cpp server can when the provider is
configured with ``supports_continue: true``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from moa.engine.call import AgentCall, CallProgress, stopped_result
from moa.engine.context import RunContext
from moa.engine.events import AgentDelta, LayerDone, LayerStarted
from moa.engine.references import Reference
from moa.engine.result import AgentResult, LayerResult
from moa.engine.spec import LayerSpec, MixtureSpec
from moa.engine.strategy import Strategy, register_strategy
from moa.errors import AggregationError, FeatureUnavailableError, QuorumError
from moa.providers.registry import ProviderRegistry
from moa.strategies.early_exit import exit_early
from moa.types import Message, Usage

__all__ = ["ChunkedOptions", "chunked", "require_continue"]

_SUPPORTING = (
    "the local provider, or an OpenAI-compatible server that can continue a final "
    "assistant message (vLLM, llama.cpp server) with 'supports_continue: true' under "
    "its 'providers:' entry"
)


class ChunkedOptions(BaseModel):
    """Options of ``strategy: {type: chunked, ...}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk_tokens: int = Field(default=4, ge=1)
    """Tokens of the aggregator's first chunk."""
    growth: float = Field(default=2.0, ge=1.0)
    """Each next chunk is this many times longer (1: all chunks equal)."""
    first_chunk_tokens: int | None = Field(default=None, ge=0)
    """Tokens each proposer must have written before the aggregator starts (default:
    ``chunk_tokens``). 0 starts at once: the opening chunk is then written from the
    conversation alone, which costs no time to first token but may commit to an answer."""
    start_quorum: int | None = Field(default=None, ge=1)
    """Start once this many proposers have their first chunk (default: every live one);
    the others join the references at the next chunk."""
    pace: bool = True
    """Wait before each chunk until the proposers are ahead of the answer; ``false`` lets
    the aggregator write on over whatever prefixes exist."""


@dataclass
class _Proposer:
    call: AgentCall
    progress: CallProgress = field(default_factory=CallProgress)
    result: AgentResult | None = None
    stop_reason: str | None = None

    @property
    def tokens(self) -> int:
        return len(self.progress.text)

    @property
    def done(self) -> bool:
        return self.result is not None

    @property
    def usable(self) -> bool:
        """Still writing, or finished with text the aggregator may use."""
        return self.result is None or self.result.ok

    def ready(self, tokens: int) -> bool:
        return self.done or self.tokens >= tokens

    def reference(self) -> Reference:
        if self.result is not None:
            return Reference(self.result.output or "", partial=self.result.partial)
        return Reference(self.progress.so_far, partial=True)


async def chunked(ctx: RunContext, options: ChunkedOptions) -> AgentResult:
    # Mixture.check has run this already; a strategy handed to a Mixture directly has not.
    require_continue(ctx.spec, ctx.providers)
    layers = ctx.spec.layers
    references: list[Reference] = []
    for number, layer in enumerate(layers[:-1], start=1):
        result = await ctx.run_layer(number, layer, references)
        references = ctx.references_of(result.agents)
        if exit_early(ctx, result, remaining=len(layers) - number):
            # The answers are complete already: nothing is left to stream.
            return await ctx.aggregate(references)
    if not layers:
        return await ctx.aggregate(references)
    return await _Staircase(ctx, len(layers), layers[-1], references, options).run()


def require_continue(spec: MixtureSpec, providers: ProviderRegistry) -> None:
    """Fail before any call when the aggregator cannot continue its own text."""
    model_id = spec.aggregator.model
    provider, model = providers.resolve(model_id)
    if not provider.supports_continue:
        raise FeatureUnavailableError(
            f"strategy 'chunked' needs an aggregator whose provider can continue a final "
            f"assistant message, and provider {provider.name!r} (aggregator {model_id!r}) "
            f"cannot. Use {_SUPPORTING}; or choose strategy 'layered'.",
            provider=provider.name,
            model=model,
        )


class _Staircase:
    """The last proposer layer, streamed, and the aggregator writing chunk by chunk."""

    def __init__(
        self,
        ctx: RunContext,
        number: int,
        layer: LayerSpec,
        references: Sequence[Reference],
        options: ChunkedOptions,
    ) -> None:
        self.ctx = ctx
        self.number = number
        self.layer = layer
        self.options = options
        first = options.first_chunk_tokens
        self.first = options.chunk_tokens if first is None else first
        self.changed = asyncio.Event()
        self.started = time.perf_counter()
        self.proposers = [
            _Proposer(
                # A hedge would swap the text the aggregator is already reading.
                replace(
                    ctx.agent_call(
                        agent, layer=number, index=i, role="proposer", references=references
                    ),
                    hedge=None,
                    stream=True,
                )
            )
            for i, agent in enumerate(layer.agents)
        ]
        self.notes: list[str] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.fatal: BaseException | None = None
        """An error that ends the run rather than one proposer (a replay short of a call)."""

    # -- proposers ------------------------------------------------------------------------

    async def _propose(self, proposer: _Proposer) -> None:
        call = proposer.call

        def on_delta(text: str) -> None:
            self.changed.set()
            if self.ctx.agent_deltas:
                self.ctx.emit(AgentDelta(call.layer, call.index, call.label, text))

        try:
            result = await self.ctx.call(call, on_delta=on_delta, progress=proposer.progress)
        except asyncio.CancelledError:
            if proposer.stop_reason is None:
                raise
            keep = self.layer.late == "partial" or proposer.stop_reason == _ANSWER_DONE
            result = stopped_result(call, proposer.progress, proposer.stop_reason, keep_text=keep)
        except Exception as exc:  # a call failure is a result; what escapes it ends the run
            self.fatal = exc
            self.changed.set()
            raise
        proposer.result = result
        self.ctx.record(result)
        self.changed.set()
        self._check_quorum()

    def _stop(self, reason: str) -> None:
        stopped = [p for p in self.proposers if not p.done and p.stop_reason is None]
        for proposer in stopped:
            proposer.stop_reason = reason
        for task in (self.tasks[self.proposers.index(p)] for p in stopped):
            task.cancel()
        if stopped:
            labels = ", ".join(p.call.label for p in stopped)
            elapsed = time.perf_counter() - self.started
            self.notes.append(f"{reason} after {elapsed:.2f}s; stopped {labels}")

    def _check_quorum(self) -> None:
        quorum = self.layer.quorum
        if quorum is None or quorum >= len(self.proposers):
            return
        answered = sum(1 for p in self.proposers if p.result is not None and p.result.ok)
        if answered >= quorum:
            self._stop(f"quorum of {quorum} of {len(self.proposers)} reached")

    async def _wait_until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            if self.fatal is not None:
                raise self.fatal
            self.changed.clear()
            await self.changed.wait()

    def _all_ready(self, tokens: int) -> bool:
        return all(p.ready(tokens) for p in self.proposers if p.usable)

    def _start_ready(self) -> bool:
        usable = [p for p in self.proposers if p.usable]
        ready = sum(1 for p in usable if p.ready(self.first))
        quorum = self.options.start_quorum
        return ready == len(usable) or (quorum is not None and ready >= quorum)

    # -- the run --------------------------------------------------------------------------

    async def run(self) -> AgentResult:
        ctx = self.ctx
        ctx.emit(LayerStarted(self.number, "proposer", tuple(p.call.label for p in self.proposers)))
        self.tasks = [asyncio.create_task(self._propose(p)) for p in self.proposers]
        deadline = None
        if self.layer.deadline is not None:
            reason = f"layer deadline of {self.layer.deadline:g}s passed"
            deadline = asyncio.get_running_loop().call_later(
                self.layer.deadline, self._stop, reason
            )
        finished = False
        try:
            await self._wait_until(self._start_ready)
            self._check_min_ok()
            waited = time.perf_counter() - self.started
            self.notes.append(f"the aggregator started after {waited:.2f}s")
            answer = await self._aggregate()
            finished = True
            return answer
        finally:
            if deadline is not None:
                deadline.cancel()
            self._stop(_ANSWER_DONE if finished else "the run stopped")
            await asyncio.gather(*self.tasks, return_exceptions=True)
            if self.fatal is not None:  # even when the answer got written without that proposer
                raise self.fatal
            results = tuple(p.result for p in self.proposers if p.result is not None)
            layer = LayerResult(self.number, results, self.layer.min_ok, tuple(self.notes))
            ctx.layers.append(layer)
            ctx.emit(LayerDone(layer))

    def _check_min_ok(self) -> None:
        usable = [p for p in self.proposers if p.usable]
        if len(usable) < self.layer.min_ok:
            failures = [p.result for p in self.proposers if p.result is not None and not p.usable]
            raise QuorumError(self.number, self.layer.min_ok, failures)

    async def _aggregate(self) -> AgentResult:
        ctx, options = self.ctx, self.options
        agent = ctx.spec.aggregator
        layer = self.number + 1
        base = ctx.agent_call(agent, layer=layer, index=0, role="aggregator", final=True)
        ctx.emit(LayerStarted(layer, "aggregator", (base.label,)))
        budget = base.params.max_tokens
        parts: list[str] = []
        chunks: list[AgentResult] = []
        written = 0
        size = float(options.chunk_tokens)
        started = time.perf_counter()
        first_token: float | None = None

        def deliver(text: str) -> None:
            nonlocal first_token
            first_token = first_token or time.perf_counter()
            parts.append(text)
            ctx.final_delta(text)

        while budget is None or written < budget:
            step = int(size) if budget is None else min(int(size), budget - written)
            if chunks and options.pace:
                await self._wait_until(partial(self._all_ready, written + step))
            proposers_done = all(p.done for p in self.proposers)
            limit: int | None = step
            if proposers_done:
                # The references will not grow any more: write the rest in one call.
                limit = None if budget is None else budget - written
            call = self._chunk_call(base, "".join(parts), limit, started)
            if call is None:
                break
            result = await ctx.call(call, on_delta=deliver)
            chunks.append(result)
            if not result.ok:
                raise AggregationError(
                    f"the aggregator {base.label} failed on chunk {len(chunks)}: {result.error}"
                )
            written += result.usage.completion_tokens
            if proposers_done or result.partial or not _hit_limit(result, limit):
                break
            size *= options.growth
        if not chunks:
            raise AggregationError(f"the aggregator {base.label} ran out of time before writing")
        result = _combined(base, chunks, "".join(parts), started, first_token, self.first)
        ctx.record(result)
        return result

    def _chunk_call(
        self, base: AgentCall, text: str, limit: int | None, started: float
    ) -> AgentCall | None:
        """The call writing the next chunk (``None`` when the agent's deadline has passed)."""
        ctx = self.ctx
        references = [p.reference() for p in self.proposers if p.usable and (p.done or p.tokens)]
        messages = (*ctx.messages, Message("assistant", text)) if text else ctx.messages
        call = ctx.agent_call(
            ctx.spec.aggregator,
            layer=base.layer,
            index=0,
            role="aggregator",
            references=references,
            messages=messages,
            final=True,
        )
        deadline = call.deadline
        if deadline is not None:
            deadline -= time.perf_counter() - started
            if deadline <= 0:
                return None
        params = replace(call.params, max_tokens=limit)
        return replace(
            call, params=params, continue_final=bool(text), hedge=None, deadline=deadline
        )


_ANSWER_DONE = "the final answer was complete"


def _hit_limit(result: AgentResult, limit: int | None) -> bool:
    if result.finish_reason is not None:
        return result.finish_reason == "length"
    return limit is not None and result.usage.completion_tokens >= limit


def _combined(
    base: AgentCall,
    chunks: Sequence[AgentResult],
    text: str,
    started: float,
    first_token: float | None,
    first: int,
) -> AgentResult:
    costs = [c.cost for c in chunks if c.cost is not None]
    return AgentResult(
        agent=base.label,
        model=base.model_id,
        layer=base.layer,
        index=0,
        role="aggregator",
        output=text,
        usage=Usage.sum(c.usage for c in chunks),
        latency_s=time.perf_counter() - started,
        ttft_s=None if first_token is None else first_token - started,
        attempts=sum(c.attempts for c in chunks),
        finish_reason=chunks[-1].finish_reason,
        cost=sum(costs) if costs else None,
        partial=chunks[-1].partial,
        notes=(
            f"chunk-wise: {len(chunks)} chunk(s); started when the proposers had "
            f"{first} token(s) each",
            *(note for c in chunks for note in c.notes),
        ),
    )


def _build(options: Any) -> Strategy:
    assert isinstance(options, ChunkedOptions)

    async def strategy(ctx: RunContext) -> AgentResult:
        return await chunked(ctx, options)

    return strategy


register_strategy(
    "chunked",
    _build,
    ChunkedOptions,
    summary="the aggregator streams while the last layer's proposers still write (low TTFT)",
    requires=require_continue,
)
