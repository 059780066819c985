from __future__ import annotations

import asyncio
import time

import pytest

from moa import AgentFailed, Done, LayerDone, Mixture, MixtureSpec, ProviderRegistry, QuorumError
from moa.testing import FakeProvider

SLOW = "one two three four five six seven eight nine ten " * 4


def mixture(layer: dict, fake: FakeProvider) -> Mixture:
    spec = {
        "layers": [layer],
        "aggregator": {"model": "fake:agg"},
        "retry": {"max_attempts": 1},
    }
    return Mixture(MixtureSpec.model_validate(spec), ProviderRegistry().add("fake", fake))


AGENTS = [{"model": "fake:a"}, {"model": "fake:b"}, {"model": "fake:c"}]


async def test_quorum_goes_on_when_k_answered_and_really_stops_the_rest() -> None:
    fake = FakeProvider(delay={"a": 0.0, "b": 0.05, "c": 5.0})
    start = time.perf_counter()
    result = await mixture({"agents": AGENTS, "quorum": 2}, fake).arun("q")
    assert time.perf_counter() - start < 2.0
    assert fake.cancelled == 1
    assert fake.in_flight == 0
    layer = result.layers[0]
    assert [a.ok for a in layer.agents] == [True, True, False]
    stopped = layer.agents[2]
    assert stopped.error_type == "Stopped" and stopped.partial
    assert "quorum of 2 of 3 reached" in (stopped.error or "")
    assert "stopped L1.3 fake:c (cancelled)" in layer.notes[0]
    # The aggregator sees only the answers that counted.
    system = fake.calls_for("agg")[0].messages[0].content
    assert "answer from a" in system and "answer from c" not in system


async def test_late_partial_keeps_what_the_slow_agent_wrote() -> None:
    fake = FakeProvider(replies={"c": SLOW}, token_delay={"c": 0.02})
    layer = {"agents": AGENTS, "quorum": 2, "late": "partial"}
    result = await mixture(layer, fake).arun("q")
    slow = result.layers[0].agents[2]
    assert slow.ok and slow.partial
    assert slow.output and SLOW.startswith(slow.output) and slow.output != SLOW
    assert slow.usage.completion_tokens > 0
    assert fake.cancelled == 1
    system = fake.calls_for("agg")[0].messages[0].content
    assert "(unfinished, still being written)" in system
    assert "their text kept as partial answers" in result.layers[0].notes[0]


async def test_layer_deadline_stops_stragglers() -> None:
    fake = FakeProvider(delay={"b": 5.0, "c": 5.0})
    start = time.perf_counter()
    result = await mixture({"agents": AGENTS, "deadline": 0.2}, fake).arun("q")
    elapsed = time.perf_counter() - start
    assert 0.2 <= elapsed < 2.0
    assert fake.cancelled == 2
    assert [a.ok for a in result.layers[0].agents] == [True, False, False]
    assert "layer deadline of 0.2s passed" in result.layers[0].notes[0]


async def test_deadline_with_too_few_answers_is_a_quorum_error() -> None:
    fake = FakeProvider(delay=5.0)
    layer = {"agents": AGENTS, "deadline": 0.1}
    with pytest.raises(QuorumError) as info:
        await mixture(layer, fake).arun("q")
    assert "layer deadline" in str(info.value)
    assert fake.cancelled == 3


async def test_failed_agents_do_not_count_towards_the_quorum() -> None:
    fake = FakeProvider(replies={"a": RuntimeError("boom")}, delay={"c": 0.1})
    result = await mixture({"agents": AGENTS, "quorum": 2}, fake).arun("q")
    assert [a.ok for a in result.layers[0].agents] == [False, True, True]
    assert fake.cancelled == 0
    assert result.layers[0].notes == ()


async def test_stopped_agents_are_announced_before_the_layer_is_done() -> None:
    fake = FakeProvider(delay={"c": 5.0})
    events = [e async for e in mixture({"agents": AGENTS, "quorum": 2}, fake).astream("q")]
    failed = [i for i, e in enumerate(events) if isinstance(e, AgentFailed)]
    done = next(i for i, e in enumerate(events) if isinstance(e, LayerDone))
    assert len(failed) == 1 and failed[0] < done
    assert isinstance(events[-1], Done)


async def test_cancelling_the_run_stops_every_agent() -> None:
    fake = FakeProvider(delay=5.0)
    task = asyncio.create_task(mixture({"agents": AGENTS, "quorum": 2}, fake).arun("q"))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.cancelled == 3 and fake.in_flight == 0


def test_quorum_must_fit_the_layer() -> None:
    with pytest.raises(ValueError, match="quorum=4"):
        MixtureSpec.model_validate(
            {"layers": [{"agents": AGENTS, "quorum": 4}], "aggregator": {"model": "fake:x"}}
        )
    with pytest.raises(ValueError, match="quorum=1"):
        MixtureSpec.model_validate(
            {
                "layers": [{"agents": AGENTS, "quorum": 1, "min_ok": 2}],
                "aggregator": {"model": "fake:x"},
            }
        )
