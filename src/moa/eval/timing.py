"""Latency of an eval item, comparable between systems however their calls were served.

Two things make an item's wall time say little about the system that answered it:
a call served from the call cache returns at once, and a call may wait for a free
slot of its provider's concurrency limit while other items' calls hold them (for
how long depends on how many items run at once, not on the system). An item whose
calls did neither is timed by its wall time (``measured``). Otherwise its latency
is rebuilt along the critical path from each call's own duration: the duration of
the call that filled the cache for a hit, the time from its free slot to its end
for a call that waited. An item every call of which was a hit is ``replayed``;
one with a live call is ``rebuilt``. The critical path is, per
layer and per wave of it, the slowest call; then the extra calls one after another;
then the aggregator. The engine's own work between calls is small and left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from moa.engine.result import AgentResult, Result
from moa.providers.cache import CacheHit

__all__ = ["LatencySource", "Timing", "item_timing"]

LatencySource = Literal["measured", "replayed", "rebuilt"]


@dataclass(frozen=True)
class Timing:
    latency_s: float
    ttft_s: float | None
    source: LatencySource
    cached_latency_s: tuple[float | None, ...] = ()
    """Per call, in the order of ``Result.calls()``: for a cache hit the duration of the
    call that filled the cache, ``None`` for a live call."""


def item_timing(result: Result, hits: Sequence[CacheHit]) -> Timing:
    """The latency and time to first token of ``result``, as if no call had waited."""
    calls = list(result.calls())
    if not hits and not any(call.queued_s for call in calls):
        return Timing(result.latency_s, result.ttft_s, "measured", (None,) * len(calls))
    pool = list(hits)
    replayed: dict[int, float] = {}

    def own(call: AgentResult) -> tuple[float, float | None]:
        for index, hit in enumerate(pool):
            if hit.model_id == call.model and hit.text == (call.output or ""):
                del pool[index]
                replayed[id(call)] = hit.latency_s
                return hit.latency_s, hit.ttft_s
        ttft = None if call.ttft_s is None else max(call.ttft_s - call.queued_s, 0.0)
        return max(call.latency_s - call.queued_s, 0.0), ttft

    before_final = sum(
        max((own(call)[0] for call in wave), default=0.0)
        for layer in result.layers
        for wave in layer.in_waves()
    )
    before_final += sum(own(call)[0] for call in result.extra_calls)
    final_latency, final_ttft = own(result.aggregator)
    ttft = before_final + (final_ttft if final_ttft is not None else final_latency)
    cached = tuple(replayed.get(id(call)) for call in calls)
    source: LatencySource = "replayed" if None not in cached else "rebuilt"
    return Timing(before_final + final_latency, ttft, source, cached)
