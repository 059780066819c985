"""The circuit breaker: a provider that keeps failing is skipped for a while, then tried."""

from __future__ import annotations

import time

import pytest
from starlette.testclient import TestClient

from moa import Mixture, MixtureSpec, ProviderRegistry, ProviderSettings
from moa.engine.breaker import CircuitBreaker, breaker_for, breaker_states
from moa.engine.spec import CircuitSpec
from moa.errors import (
    CircuitOpenError,
    EmptyAnswerError,
    ProviderConnectionError,
    ProviderStatusError,
)
from moa.server import ServerSettings, create_app
from moa.testing import FakeProvider
from moa.testing.faulty_server import ANSWER, FaultyOpenAIServer

DOWN = ProviderConnectionError("refused")


def test_it_opens_after_failures_in_a_row_and_lets_one_trial_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    breaker = CircuitBreaker("up", CircuitSpec(failures=3, cooldown=10))
    for _ in range(2):
        breaker.check("m")
        breaker.failed(DOWN)
    breaker.succeeded()  # a success in between starts the count again
    for _ in range(3):
        breaker.check("m")
        breaker.failed(DOWN)
    with pytest.raises(CircuitOpenError, match="last 3 calls failed; it is tried again in 10s"):
        breaker.check("m")
    now[0] += 10
    breaker.check("m")  # the trial
    with pytest.raises(CircuitOpenError):
        breaker.check("m")  # only one at a time
    breaker.failed(DOWN)  # the trial failed: another cool-down
    with pytest.raises(CircuitOpenError):
        breaker.check("m")
    now[0] += 10
    breaker.check("m")
    breaker.succeeded()
    breaker.check("m")
    assert breaker.state().open is False and breaker.state().skipped == 3


def test_only_failures_that_say_the_provider_is_unwell_count() -> None:
    breaker = CircuitBreaker("up", CircuitSpec(failures=1, cooldown=10))
    breaker.failed(ProviderStatusError("bad request", status_code=400))
    breaker.failed(EmptyAnswerError("no text"))
    breaker.failed(ValueError("a bug"))
    breaker.check("m")
    breaker.failed(ProviderStatusError("down", status_code=503))
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
