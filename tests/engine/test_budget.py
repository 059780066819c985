from __future__ import annotations

import time

import pytest

from moa import Mixture, MixtureSpec, ProviderRegistry, TextDelta
from moa.engine.budget import LatencyHistory
from moa.testing import FakeProvider

LONG = "w " * 200


def mixture(spec: dict, fake: FakeProvider) -> Mixture:
    spec = {"retry": {"max_attempts": 1}, **spec}
    return Mixture(MixtureSpec.model_validate(spec), ProviderRegistry().add("fake", fake))


async def test_agent_deadline_stops_the_call_and_keeps_its_text() -> None:
    fake = FakeProvider(replies={"slow": LONG}, token_delay={"slow": 0.02})
    spec = {
        "layers": [[{"model": "fake:slow", "deadline": 0.5}, {"model": "fake:fast"}]],
        "aggregator": {"model": "fake:agg"},
    }
    start = time.perf_counter()
    result = await mixture(spec, fake).arun("q")
    assert time.perf_counter() - start < 3.0
    slow = result.layers[0].agents[0]
    assert slow.ok and slow.partial
    assert "agent deadline of 0.5s passed" in slow.notes
    assert 0 < len(slow.output or "") < len(LONG)
    assert fake.cancelled == 1


async def test_default_deadline_applies_to_the_aggregator_too() -> None:
    fake = FakeProvider(replies={"agg": LONG}, token_delay={"agg": 0.02})
    spec = {"defaults": {"deadline": 0.5}, "aggregator": {"model": "fake:agg"}}
    result = await mixture(spec, fake).arun("q")
    assert result.aggregator.partial
    assert 0 < len(result.output) < len(LONG)


HEDGED = {
    "layers": [[{"model": "fake:slow", "hedge": {"model": "fake:backup", "after": 0.1}}]],
    "aggregator": {"model": "fake:agg"},
}


async def test_hedge_backup_wins_when_the_primary_is_slow() -> None:
    fake = FakeProvider(delay={"slow": 5.0})
    start = time.perf_counter()
    result = await mixture(HEDGED, fake).arun("q")
    assert time.perf_counter() - start < 2.0
    answer = result.layers[0].agents[0]
    assert answer.output == "answer from backup"
    assert answer.model == "fake:backup"
    assert any("the backup won" in note for note in answer.notes)
    # The loser was really stopped, and both calls count.
    assert fake.cancelled == 1
    (loser,) = result.extra_calls
    assert loser.model == "fake:slow" and loser.error_type == "Stopped"
    assert result.usage.calls == 3
    assert loser.usage.prompt_tokens > 0


async def test_no_hedge_when_the_primary_is_quick() -> None:
    fake = FakeProvider()
    result = await mixture(HEDGED, fake).arun("q")
    assert result.layers[0].agents[0].output == "answer from slow"
    assert fake.calls_for("backup") == []
    assert result.extra_calls == ()


async def test_primary_wins_if_it_finishes_first_after_the_backup_started() -> None:
    fake = FakeProvider(delay={"slow": 0.2, "backup": 5.0})
    result = await mixture(HEDGED, fake).arun("q")
    answer = result.layers[0].agents[0]
    assert answer.output == "answer from slow"
    assert any("the primary won" in note for note in answer.notes)
    assert result.extra_calls[0].model == "fake:backup"
    assert fake.cancelled == 1


async def test_aggregator_hedge_races_to_the_first_token() -> None:
    # The backup writes its first token sooner but finishes later: it must win,
    # and only its text may reach the user.
    fake = FakeProvider(
        replies={"agg": "primary text", "backup": LONG},
        delay={"agg": 1.0, "backup": 0.2},
        token_delay={"backup": 0.005},
    )
    spec = {"aggregator": {"model": "fake:agg", "hedge": {"model": "fake:backup", "after": 0.05}}}
    events = [e async for e in mixture(spec, fake).astream("q")]
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert streamed == LONG
    assert fake.cancelled == 1


async def test_hedge_at_a_percentile_waits_for_enough_samples() -> None:
    fake = FakeProvider(delay={"slow": 0.05})
    spec = {
        "layers": [
            [
                {
                    "model": "fake:slow",
                    "hedge": {"model": "fake:backup", "percentile": 50, "min_samples": 3},
                }
            ]
        ],
        "aggregator": {"model": "fake:agg"},
    }
    moa = mixture(spec, fake)
    for _ in range(3):
        await moa.arun("q")
    assert fake.calls_for("backup") == []  # no hedge before min_samples latencies are known
    assert moa.latency.count("fake:slow") == 3
    fake._delay = {"slow": 2.0}  # now far slower than its median
    result = await moa.arun("q")
    assert result.layers[0].agents[0].model == "fake:backup"


def test_percentile_is_nearest_rank() -> None:
    history = LatencyHistory()
    for seconds in [0.4, 0.1, 0.3, 0.2]:
        history.add("m", "finish", seconds)
    assert history.percentile("m", 50) == 0.2
    assert history.percentile("m", 90) == 0.4
    assert history.percentile("other", 90) is None


def test_hedge_needs_a_trigger() -> None:
    with pytest.raises(ValueError, match="after"):
        MixtureSpec.model_validate({"aggregator": {"model": "a:b", "hedge": {"model": "c:d"}}})


def test_hedge_models_are_resolved_up_front() -> None:
    spec = MixtureSpec.model_validate(HEDGED)
    assert spec.model_ids() == ["fake:slow", "fake:backup", "fake:agg"]
