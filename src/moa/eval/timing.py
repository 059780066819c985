"""Latency of a run whose calls may have come from the call cache.

A cached call returns at once, so the wall time of a resumed or cache-sharing
run says nothing about the system. Each cache hit carries the duration of the
call that filled the cache; the latency of the run is then rebuilt along its
critical path: per layer the slowest call, plus the extra calls, plus the
aggregator (the engine's own orchestration overhead is small and left out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from moa.engine.result import AgentResult, Result
from moa.providers.cache import CacheHit

__all__ = ["Timing", "replayed_timing"]


@dataclass(frozen=True)
class Timing:
    latency_s: float
    ttft_s: float | None
    replayed: bool
    """Some call came from the cache: the numbers are rebuilt from the original durations."""


def replayed_timing(result: Result, hits: Sequence[CacheHit]) -> Timing:
    """The latency and time to first token of ``result`` as if no call had been cached."""
    if not hits:
        return Timing(result.latency_s, result.ttft_s, False)
    pool = list(hits)

    def original(call: AgentResult) -> tuple[float, float | None]:
        for index, hit in enumerate(pool):
            if hit.model_id == call.model and hit.text == (call.output or ""):
                del pool[index]
                return hit.latency_s, hit.ttft_s
        return call.latency_s, call.ttft_s

    before_final = sum(
        max((original(call)[0] for call in layer.agents), default=0.0) for layer in result.layers
    )
    before_final += sum(original(call)[0] for call in result.extra_calls)
    final_latency, final_ttft = original(result.aggregator)
    ttft = before_final + (final_ttft if final_ttft is not None else final_latency)
    return Timing(before_final + final_latency, ttft, True)
