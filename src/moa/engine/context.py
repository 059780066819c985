"""The state of one run and the two building blocks every strategy composes.

:meth:`RunContext.run_layer` runs a layer of agents concurrently over the
previous answers and enforces its quorum; :meth:`RunContext.aggregate` writes
the final answer, streaming it. Both emit events as they happen and record
every call, so a strategy only decides *what* to run, never how.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from moa.engine.breaker import breaker_for
from moa.engine.budget import LatencyHistory, Race, run_call
from moa.engine.call import AgentCall, CallProgress, Hedge
from moa.engine.events import (
    AgentDelta,
    AgentDone,
    AgentFailed,
    Event,
    LayerDone,
    LayerStarted,
    TextDelta,
)
from moa.engine.quorum import gather_layer, needs_quorum
from moa.engine.references import Reference, with_references
from moa.engine.result import AgentResult, AgentRole, LayerResult
from moa.engine.spec import AgentSpec, LayerSpec, MixtureSpec
from moa.errors import AggregationError, QuorumError
from moa.providers.registry import ProviderRegistry
from moa.types import GenerationParams, Message

__all__ = ["RunContext"]


@dataclass
class RunContext:
    """One run of a mixture over one conversation."""

    spec: MixtureSpec
    providers: ProviderRegistry
    messages: tuple[Message, ...]
    emit: Callable[[Event], None]
    request_params: GenerationParams = field(default_factory=GenerationParams)
    """Per-request parameters: applied to the final answer; ``extra`` goes to every call."""
    agent_deltas: bool = False
    trace_id: str = ""
    started: float = field(default_factory=time.perf_counter)
    layers: list[LayerResult] = field(default_factory=list)
    extra_calls: list[AgentResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    first_token: float | None = None
    latency: LatencyHistory = field(default_factory=LatencyHistory)
    """Observed latencies per model, for hedging at a percentile (shared across runs)."""

    # -- building calls -------------------------------------------------------------------

    def agent_call(
        self,
        agent: AgentSpec,
        *,
        layer: int,
        index: int,
        role: AgentRole,
        references: Sequence[Reference] = (),
        messages: Sequence[Message] | None = None,
        final: bool = False,
        instruction: str | None = None,
    ) -> AgentCall:
        """The call ``agent`` makes at this position, with ``references`` in its system message.

        Its budget comes along: the agent's ``deadline`` and, with a ``hedge``,
        the backup call to the hedge model (same conversation and parameters).
        """
        hedge = None
        if agent.hedge is not None:
            backup = agent.model_copy(
                update={"model": agent.hedge.model, "hedge": None, "name": None}
            )
            backup_call = self.agent_call(
                backup,
                layer=layer,
                index=index,
                role=role,
                references=references,
                messages=messages,
                final=final,
                instruction=instruction,
            )
            label = f"{agent.label(layer, index)} (hedge {agent.hedge.model})"
            hedge = Hedge(replace(backup_call, label=label), agent.hedge)
        provider, model = self.providers.resolve(agent.model)
        params = self.spec.effective(agent)
        if final:
            params = params.merged(self.request_params)
        elif self.request_params.extra:
            params = params.merged(GenerationParams(extra=self.request_params.extra))
        conversation = with_references(
            self.messages if messages is None else messages,
            references,
            instruction=instruction or self.spec.instruction,
            agent_system=self.spec.agent_system(agent),
        )
        return AgentCall(
            provider=provider,
            model_id=agent.model,
            model=model,
            messages=conversation,
            params=params,
            label=agent.label(layer, index),
            layer=layer,
            index=index,
            role=role,
            timeout=self.spec.agent_timeout(agent),
            retry=self.spec.retry,
            price=self.spec.prices.get(agent.model),
            deadline=self.spec.agent_deadline(agent),
            hedge=hedge,
            breaker=None if self.spec.circuit is None else breaker_for(provider, self.spec.circuit),
        )

    # -- the two building blocks ----------------------------------------------------------

    async def run_layer(
        self,
        layer: int,
        spec: LayerSpec,
        references: Sequence[Reference],
        *,
        more: Callable[[LayerResult], Awaitable[Sequence[AgentSpec]]] | None = None,
    ) -> LayerResult:
        """Run every agent of ``spec`` concurrently; raise :class:`QuorumError` below ``min_ok``.

        With ``more`` (a coroutine function) the layer is drawn in waves (an adaptive
        vote, a code check): once the quorum is met, ``more`` is shown the layer so far
        and names the agents to add to it, until it names none. Each added call is the
        one it would have been had the agent been in the layer from the start (same
        position, same conversation). Every wave is announced by a :class:`LayerStarted`;
        :class:`LayerDone` comes once, with every agent in order.
        """
        calls = [
            self.agent_call(agent, layer=layer, index=i, role="proposer", references=references)
            for i, agent in enumerate(spec.agents)
        ]
        self.emit(LayerStarted(layer, "proposer", tuple(c.label for c in calls)))
        notes: tuple[str, ...] = ()
        if needs_quorum(spec):
            results, notes = await gather_layer(calls, spec, self._run_agent, self.record)
        else:
            results = await asyncio.gather(*(self._run_agent(call) for call in calls))
        result = LayerResult(layer, tuple(results), spec.min_ok, notes)
        if more is not None and len(result.answers) >= spec.min_ok:
            result = await self._add_waves(result, more, references)
        self.layers.append(result)
        self.emit(LayerDone(result))
        if len(result.answers) < spec.min_ok:
            raise QuorumError(layer, spec.min_ok, result.failures)
        return result

    async def _add_waves(
        self,
        result: LayerResult,
        more: Callable[[LayerResult], Awaitable[Sequence[AgentSpec]]],
        references: Sequence[Reference],
    ) -> LayerResult:
        while agents := await more(result):
            start = len(result.agents)
            calls = [
                self.agent_call(
                    agent,
                    layer=result.index,
                    index=start + i,
                    role="proposer",
                    references=references,
                )
                for i, agent in enumerate(agents)
            ]
            labels = tuple(c.label for c in calls)
            self.emit(LayerStarted(result.index, "proposer", labels, first_index=start))
            added = await asyncio.gather(*(self._run_agent(call) for call in calls))
            waves = result.waves or (start,)
            result = replace(result, agents=(*result.agents, *added), waves=(*waves, len(added)))
        return result

    async def _run_agent(
        self, call: AgentCall, progress: CallProgress | None = None
    ) -> AgentResult:
        on_delta = None
        if self.agent_deltas:

            def on_delta(text: str) -> None:
                self.emit(AgentDelta(call.layer, call.index, call.label, text))

        result = await self.call(call, on_delta=on_delta, progress=progress)
        self.record(result)
        return result

    async def call(
        self,
        call: AgentCall,
        *,
        on_delta: Callable[[str], None] | None = None,
        progress: CallProgress | None = None,
        race: Race = "finish",
    ) -> AgentResult:
        """Run one call within its budget (deadline, hedge); a hedge's loser is recorded here."""
        return await run_call(
            call,
            history=self.latency,
            on_delta=on_delta,
            progress=progress,
            race=race,
            on_extra=self.record_extra,
        )

    def record_extra(self, result: AgentResult) -> None:
        """Keep a call made outside the layers and the final answer (it counts in the usage)."""
        self.extra_calls.append(result)
        self.record(result)

    def record(self, result: AgentResult) -> None:
        """Announce a finished call (layers collect their own results)."""
        self.emit(AgentDone(result) if result.ok else AgentFailed(result))

    async def aggregate(
        self,
        references: Sequence[Reference],
        agent: AgentSpec | None = None,
        *,
        layer: int | None = None,
        instruction: str | None = None,
    ) -> AgentResult:
        """Write the final answer from ``references``, streaming it as :class:`TextDelta` events.

        ``instruction`` replaces the mixture's aggregate instruction for this call.
        """
        agent = agent or self.spec.aggregator
        layer = layer if layer is not None else len(self.layers) + 1
        call = self.agent_call(
            agent,
            layer=layer,
            index=0,
            role="aggregator",
            references=references,
            final=True,
            instruction=instruction,
        )
        self.emit(LayerStarted(layer, "aggregator", (call.label,)))
        # The streamed answer cannot be taken back, so a hedge here races to the first token.
        result = await self.call(call, on_delta=self.final_delta, race="first_token")
        self.record(result)
        if result.ok:
            return result
        if agent.fallback is not None and self.first_token is None:
            fallback = await self._fall_back(agent, result, references, layer, instruction)
            if fallback is not None:
                return fallback
        raise AggregationError(f"the aggregator {call.label} failed: {result.error}")

    async def _fall_back(
        self,
        agent: AgentSpec,
        failed: AgentResult,
        references: Sequence[Reference],
        layer: int,
        instruction: str | None,
    ) -> AgentResult | None:
        """The final answer from ``agent.fallback`` after the aggregator failed, or None.

        Only before any of the answer was streamed: a client may already show it.
        """
        self.extra_calls.append(failed)  # the failed call still counts
        if agent.fallback == "proposal":
            chosen = next((r for r in references if r.text.strip() and not r.partial), None)
            if chosen is None:
                return None
            number = list(references).index(chosen) + 1
            self.notes.append(
                f"the aggregator {failed.agent} failed ({failed.error}); the answer is "
                f"candidate answer {number}, the first finished one (fallback: proposal)"
            )
            self.final_delta(chosen.text)
            return AgentResult(
                agent=f"fallback: proposal {number}",
                model="moa:proposal",
                layer=layer,
                index=0,
                role="aggregator",
                output=chosen.text,
                finish_reason="stop",
            )
        assert agent.fallback is not None
        backup = agent.model_copy(
            update={"model": agent.fallback, "fallback": None, "hedge": None, "name": None}
        )
        call = self.agent_call(
            backup,
            layer=layer,
            index=0,
            role="aggregator",
            references=references,
            final=True,
            instruction=instruction,
        )
        result = await self.call(call, on_delta=self.final_delta, race="first_token")
        self.record(result)
        if not result.ok:
            self.extra_calls.append(result)
            return None
        self.notes.append(
            f"the aggregator {failed.agent} failed ({failed.error}); "
            f"its fallback {agent.fallback} answered"
        )
        return result

    def final_delta(self, text: str) -> None:
        """Emit a piece of the final answer."""
        if self.first_token is None:
            self.first_token = time.perf_counter()
        self.emit(TextDelta(text))

    @staticmethod
    def references_of(results: Sequence[AgentResult]) -> list[Reference]:
        return [Reference(r.output or "", partial=r.partial) for r in results if r.ok]
