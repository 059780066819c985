"""The circuit breaker: a provider that keeps failing is skipped for a while, then tried."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from starlette.testclient import TestClient

from moa import Mixture, MixtureSpec, ProviderRegistry, ProviderSettings
from moa.engine import breaker as breaker_module
from moa.engine.breaker import BreakerState, CircuitBreaker, breaker_for, breaker_states
from moa.engine.call import AgentCall, call_agent
from moa.engine.spec import CircuitSpec, RetryPolicy
from moa.errors import (
    CircuitOpenError,
    EmptyAnswerError,
    ProviderConnectionError,
    ProviderStatusError,
)
from moa.server import ServerSettings, create_app
from moa.testing import FakeProvider
from moa.testing.faulty_server import ANSWER, FaultyOpenAIServer
from moa.types import GenerationParams, Message

DOWN = ProviderConnectionError("refused")


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The breaker's clock: ``now[0] += 10`` lets ten seconds pass."""
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    return clock


def test_it_opens_after_failures_in_a_row_and_lets_one_trial_through(now: list[float]) -> None:
    breaker = CircuitBreaker("up", CircuitSpec(failures=3, cooldown=10))
    for _ in range(2):
        breaker.failed(DOWN, breaker.check("m"))
    breaker.succeeded(breaker.check("m"))  # a success in between starts the count again
    for _ in range(3):
        breaker.failed(DOWN, breaker.check("m"))
    with pytest.raises(CircuitOpenError, match="last 3 calls failed; it is tried again in 10s"):
        breaker.check("m")
    now[0] += 10
    trial = breaker.check("m")
    with pytest.raises(CircuitOpenError):
        breaker.check("m")  # only one at a time
    breaker.failed(DOWN, trial)  # the trial failed: another cool-down
    with pytest.raises(CircuitOpenError):
        breaker.check("m")
    now[0] += 10
    breaker.succeeded(breaker.check("m"))
    breaker.check("m")
    assert breaker.state().open is False and breaker.state().skipped == 3


def test_only_failures_that_say_the_provider_is_unwell_count() -> None:
    breaker = CircuitBreaker("up", CircuitSpec(failures=1, cooldown=10))
    breaker.failed(ProviderStatusError("bad request", status_code=400))
    breaker.failed(EmptyAnswerError("no text"))
    breaker.failed(ValueError("a bug"))
    breaker.failed(ProviderStatusError("down", status_code=503), breaker.check("m"))
    with pytest.raises(CircuitOpenError):
        breaker.check("m")


async def test_a_provider_that_is_down_is_skipped_and_the_others_carry_on() -> None:
    with FaultyOpenAIServer() as server:
        registry = ProviderRegistry(
            {
                "up": ProviderSettings(base_url=server.base_url, requires_key=False),
                "down": ProviderSettings(base_url=server.base_url, requires_key=False),
            }
        )
        spec = MixtureSpec.model_validate(
            {
                "layers": [[{"model": "up:ok"}, {"model": "down:server-error"}]],
                "aggregator": {"model": "up:ok-agg"},
                "retry": {"max_attempts": 2, "backoff_initial": 0.01, "backoff_max": 0.01},
                "circuit": {"failures": 4, "cooldown": 60},
            }
        )
        mixture = Mixture(spec, registry)
        errors = []
        for _ in range(4):
            result = await mixture.arun("What is 2 + 2?")
            assert result.output == ANSWER
            errors.append(result.layers[0].agents[1].error_type)
        await mixture.aclose()
        # Two runs of two attempts each opened it; the next calls were not sent at all.
        assert errors == ["ProviderStatusError"] * 2 + ["CircuitOpenError"] * 2
        assert server.requests["server-error"] == 4
        down = [s for s in breaker_states() if s.provider == "down" and s.open]
        assert down and down[0].skipped == 2


def test_circuit_config_and_its_metrics() -> None:
    spec = MixtureSpec.model_validate({"aggregator": {"model": "a:b"}, "circuit": None})
    assert spec.circuit is None
    assert MixtureSpec.model_validate({"aggregator": {"model": "a:b"}}).circuit == CircuitSpec()

    provider = FakeProvider(name="metrics-probe")
    breaker = breaker_for(provider, CircuitSpec(failures=1))
    breaker.failed(DOWN)
    with pytest.raises(CircuitOpenError):
        breaker.check("m")
    with TestClient(create_app(ServerSettings(include_presets=False))) as client:
        text = client.get("/metrics").text
    assert 'moa_circuit_open{provider="metrics-probe"} 1.0' in text
    assert 'moa_circuit_skipped_total{provider="metrics-probe"} 1.0' in text


# -- failures in a row, in the order the calls were sent ----------------------------------

SERVER_ERROR = ProviderStatusError("HTTP 500", status_code=500)


def _call(provider: FakeProvider, model: str, breaker: CircuitBreaker, **kwargs: Any) -> AgentCall:
    return AgentCall(
        provider=provider,
        model_id=f"up:{model}",
        model=model,
        messages=(Message("user", "What is 2 + 2?"),),
        params=GenerationParams(),
        label=model,
        layer=1,
        index=1,
        role="proposer",
        timeout=10.0,
        retry=RetryPolicy(max_attempts=1),
        breaker=breaker,
        **kwargs,
    )


async def test_fast_failures_overtaking_calls_in_flight_do_not_open_it() -> None:
    # The soak's 502s: calls sent together, of which those failing at once (a 500 in a
    # millisecond) all finished before any of the slower successes; counted in the order
    # they finished, they made "failures in a row" and opened the circuit of a provider
    # that answers 70% of its calls.
    provider = FakeProvider("up", replies={"bad": SERVER_ERROR}, delay={"good": 0.05})
    breaker = CircuitBreaker("up", CircuitSpec(failures=3, cooldown=60))
    models = ["good", "bad"] * 3 + ["good"] * 4
    calls = [asyncio.create_task(call_agent(_call(provider, m, breaker))) for m in models]
    await asyncio.sleep(0.01)  # the three failures are in, the successes still on their way
    late = await call_agent(_call(provider, "bad", breaker))
    assert late.error_type == "ProviderStatusError"  # sent, not skipped
    results = await asyncio.gather(*calls)
    assert [r.error_type for r in results] == [None, "ProviderStatusError"] * 3 + [None] * 4
    assert breaker.state() == BreakerState("up", open=False, failures=1, skipped=0)


def test_failures_count_in_the_order_their_calls_were_sent() -> None:
    breaker = CircuitBreaker("up", CircuitSpec(failures=3, cooldown=60))
    first, *rest = [breaker.check("m") for _ in range(4)]
    for ticket in rest:  # the three sent after the first failed while it is in flight
        breaker.failed(DOWN, ticket)
    assert not breaker.open and breaker.failures == 0
    breaker.succeeded(first)  # it answered: the three after it are failures in a row
    assert breaker.open and breaker.failures == 3

    breaker = CircuitBreaker("up", CircuitSpec(failures=3, cooldown=60))
    tickets = [breaker.check("m") for _ in range(4)]
    for ticket in tickets[::2]:
        breaker.failed(DOWN, ticket)
    breaker.succeeded(tickets[1])
    breaker.failed(DOWN, tickets[3])
    assert not breaker.open and breaker.failures == 2  # the last two were sent in a row


def test_a_call_that_ends_with_no_verdict_does_not_hold_the_count_back() -> None:
    breaker = CircuitBreaker("up", CircuitSpec(failures=2, cooldown=60))
    cancelled = breaker.check("m")
    for ticket in [breaker.check("m"), breaker.check("m")]:
        breaker.failed(DOWN, ticket)
    breaker.released(cancelled)
    assert breaker.open
    breaker.succeeded(cancelled)  # a ticket counts once
    assert breaker.open


async def test_a_stream_counts_as_a_success_once_its_first_token_is_in() -> None:
    # A long answer in flight does not hold back the count of the failures sent after it.
    provider = FakeProvider(
        "up", replies={"bad": SERVER_ERROR, "long": "one two three"}, token_delay={"long": 0.2}
    )
    breaker = CircuitBreaker("up", CircuitSpec(failures=2, cooldown=60))
    long = asyncio.create_task(call_agent(_call(provider, "long", breaker, stream=True)))
    await asyncio.sleep(0.01)
    for _ in range(2):
        assert (await call_agent(_call(provider, "bad", breaker))).error_type is not None
    assert breaker.open and not long.done()
    assert (await long).output == "one two three"
    assert breaker.open  # counted once, at its first token


async def test_a_cancelled_call_gives_its_place_back() -> None:
    provider = FakeProvider("up", replies={"bad": SERVER_ERROR}, delay={"slow": 5.0})
    breaker = CircuitBreaker("up", CircuitSpec(failures=2, cooldown=60))
    slow = asyncio.create_task(call_agent(_call(provider, "slow", breaker)))
    await asyncio.sleep(0.01)
    for _ in range(2):
        await call_agent(_call(provider, "bad", breaker))
    assert not breaker.open  # the slow call sent first may yet answer
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert breaker.open


def test_the_trial_decides_at_once_though_calls_sent_before_it_are_in_flight(
    now: list[float],
) -> None:
    breaker = CircuitBreaker("up", CircuitSpec(failures=2, cooldown=10))
    first, second, slow = (breaker.check("m") for _ in range(3))
    breaker.failed(DOWN, first)
    breaker.failed(DOWN, second)
    assert breaker.open
    now[0] += 10
    breaker.failed(DOWN, breaker.check("m"))  # the trial failed: another cool-down
    with pytest.raises(CircuitOpenError):
        breaker.check("m")
    now[0] += 10
    breaker.succeeded(breaker.check("m"))
    assert not breaker.open and breaker.failures == 0
    breaker.failed(DOWN, slow)  # sent before the trial that answered: it counts for nothing
    assert breaker.failures == 0
    breaker.failed(DOWN, breaker.check("m"))
    assert not breaker.open and breaker.failures == 1


def test_a_ticket_never_reported_stops_the_count_only_for_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(breaker_module, "MAX_WAITING", 3)
    breaker = CircuitBreaker("up", CircuitSpec(failures=3, cooldown=60))
    breaker.check("m")  # lost: neither answered, failed nor released
    for _ in range(3):
        breaker.failed(DOWN, breaker.check("m"))
    assert not breaker.open
    breaker.failed(DOWN, breaker.check("m"))  # a fourth waiting: the lost one is passed over
    assert breaker.open and breaker.failures == 4
