"""Every kind of upstream failure, for a proposer and for the aggregator, streaming and not.

Against :class:`~moa.testing.faulty_server.FaultyOpenAIServer` (real HTTP on
127.0.0.1): a failing proposer is recorded and the others carry on; a failing
aggregator ends the run with an :class:`AggregationError`, or its ``fallback``
answers when the failure came before the answer's first token; nothing hangs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from moa import Mixture, MixtureSpec, ProviderRegistry, ProviderSettings
from moa.engine.events import Done, TextDelta
from moa.errors import AggregationError
from moa.testing.faulty_server import ANSWER, FAULTS, FaultyOpenAIServer

# Faults that reach the aggregator after its first token: a client may already show that
# token, so no fallback can take over.
MID_ANSWER = {"stall", "truncated", "malformed"}
BOUND_S = 10.0  # no case may take longer: one attempt waits 0.5 s for a token, two attempts


@pytest.fixture(scope="module")
def server() -> Iterator[FaultyOpenAIServer]:
    with FaultyOpenAIServer() as server:
        yield server


def mixture(server: FaultyOpenAIServer, spec: dict[str, Any]) -> Mixture:
    registry = ProviderRegistry(
        {"up": ProviderSettings(base_url=server.base_url, requires_key=False, timeout=5)}
    )
    full = {
        "timeout": 0.5,
        "retry": {"max_attempts": 2, "backoff_initial": 0.01, "backoff_max": 0.1},
        **spec,
    }
    return Mixture(MixtureSpec.model_validate(full), registry)


def proposer_fault(fault: str) -> dict[str, Any]:
    return {
        "layers": [[{"model": "up:ok-a"}, {"model": f"up:{fault}"}]],
        "aggregator": {"model": "up:ok-agg"},
    }


def aggregator_fault(fault: str, fallback: str | None) -> dict[str, Any]:
    aggregator: dict[str, Any] = {"model": f"up:{fault}"}
    if fallback:
        aggregator["fallback"] = fallback
    return {"layers": [[{"model": "up:ok-a"}, {"model": "up:ok-b"}]], "aggregator": aggregator}


async def run(mix: Mixture, stream: bool) -> Any:
    """The result, or the error, of one run, within the bound."""
    started = time.perf_counter()
    try:
        if not stream:
            return await asyncio.wait_for(mix.arun("What is 2 + 2?"), BOUND_S)
        deltas: list[str] = []

        async def consume() -> Any:
            async for event in mix.astream("What is 2 + 2?"):
                if isinstance(event, TextDelta):
                    deltas.append(event.text)
                elif isinstance(event, Done):
                    assert "".join(deltas) == event.result.output
                    return event.result
            raise AssertionError("the stream ended without Done")

        return await asyncio.wait_for(consume(), BOUND_S)
    except AggregationError as exc:
        return exc
    finally:
        assert time.perf_counter() - started < BOUND_S
        await mix.aclose()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("fault", FAULTS)
async def test_a_failing_proposer_is_recorded_and_the_others_carry_on(
    server: FaultyOpenAIServer, fault: str, stream: bool
) -> None:
    result = await run(mixture(server, proposer_fault(fault)), stream)
    assert not isinstance(result, Exception), result
    assert result.output == ANSWER
    (ok, failed) = result.layers[0].agents
    assert ok.ok and ok.output == ANSWER
    assert not failed.ok and failed.error and failed.model == f"up:{fault}"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("fault", FAULTS)
async def test_a_failing_aggregator_ends_the_run_with_an_error(
    server: FaultyOpenAIServer, fault: str, stream: bool
) -> None:
    outcome = await run(mixture(server, aggregator_fault(fault, None)), stream)
    assert isinstance(outcome, AggregationError), outcome
    assert f"up:{fault}" in str(outcome)


@pytest.mark.parametrize("fallback", ["up:ok-agg", "proposal"])
@pytest.mark.parametrize("fault", FAULTS)
async def test_the_aggregator_s_fallback_answers_unless_the_answer_had_begun(
    server: FaultyOpenAIServer, fault: str, fallback: str
) -> None:
    outcome = await run(mixture(server, aggregator_fault(fault, fallback)), stream=True)
    if fault in MID_ANSWER:
        assert isinstance(outcome, AggregationError), outcome
        return
    assert not isinstance(outcome, Exception), outcome
    assert outcome.output == ANSWER
    note = next(n for n in outcome.notes if "failed" in n)
    assert f"up:{fault}" in note
    assert (
        "its fallback up:ok-agg answered" if fallback != "proposal" else "candidate answer 1"
    ) in note
    # The failed call counts in the run's usage and calls.
    assert any(c.model == f"up:{fault}" and not c.ok for c in outcome.calls())


def test_fallback_is_for_the_aggregator_and_counts_among_the_mixture_s_models() -> None:
    spec = MixtureSpec.model_validate(
        {"layers": [[{"model": "up:a"}]], "aggregator": {"model": "up:b", "fallback": "other:c"}}
    )
    assert spec.model_ids() == ["up:a", "up:b", "other:c"]
    with pytest.raises(ValueError, match="fallback is for the aggregator"):
        MixtureSpec.model_validate(
            {"layers": [[{"model": "up:a", "fallback": "up:c"}]], "aggregator": {"model": "up:b"}}
        )
    with pytest.raises(ValueError, match="fallback"):
        MixtureSpec.model_validate({"aggregator": {"model": "up:b", "fallback": "nonsense"}})
