from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable

import pytest

from moa import (
    AgentDone,
    AgentFailed,
    AggregationError,
    Done,
    GenerationParams,
    LayerStarted,
    Message,
    Mixture,
    MixtureSpec,
    ProviderRegistry,
    ProviderStatusError,
    QuorumError,
    RateLimitError,
    TextDelta,
)
from moa.testing import FakeProvider, FunctionProvider
from moa.types import CompletionRequest


def mixture(spec: dict, provider: FakeProvider) -> Mixture:
    return Mixture(MixtureSpec.model_validate(spec), ProviderRegistry().add("fake", provider))


THREE_BY_TWO = {
    "layers": [
        [{"model": "fake:a"}, {"model": "fake:b"}, {"model": "fake:c"}],
        [{"model": "fake:a"}, {"model": "fake:b"}, {"model": "fake:c"}],
    ],
    "aggregator": {"model": "fake:agg"},
    "retry": {"backoff_initial": 0.0},
}


async def test_agents_of_a_layer_run_concurrently() -> None:
    fake = FakeProvider(delay=0.3)
    start = time.perf_counter()
    result = await mixture(THREE_BY_TWO, fake).arun("hi")
    elapsed = time.perf_counter() - start
    # Sequential calls would take 7 x 0.3 s; concurrent layers take 3 x 0.3 s.
    assert elapsed < 1.6
    assert fake.max_in_flight == 3
    assert result.output == "answer from agg"


async def test_later_layers_and_aggregator_see_every_previous_answer() -> None:
    fake = FakeProvider(
        replies={"a": ["a1", "a2"], "b": ["b1", "b2"], "c": ["c1", "c2"], "agg": "final"}
    )
    result = await mixture(THREE_BY_TWO, fake).arun("question?")
    layer2 = [c for c in fake.calls[3:6]]
    for call in layer2:
        system = call.messages[0].content
        assert all(f"\n{ref}\n" in system for ref in ("a1", "b1", "c1"))
        assert "a2" not in system
    aggregator_system = fake.calls_for("agg")[0].messages[0].content
    assert all(f"\n{ref}\n" in aggregator_system for ref in ("a2", "b2", "c2"))
    assert "a1" not in aggregator_system
    assert "Candidate answer 3" in aggregator_system
    assert result.output == "final"
    assert [a.output for a in result.layers[1].agents] == ["a2", "b2", "c2"]


async def test_first_layer_sees_only_the_conversation() -> None:
    fake = FakeProvider()
    await mixture(THREE_BY_TWO, fake).arun("question?")
    for call in fake.calls[:3]:
        assert [m.role for m in call.messages] == ["user"]


async def test_user_system_prompt_is_kept_first_and_history_stays_messages() -> None:
    fake = FakeProvider()
    conversation = [
        Message("system", "Answer in French."),
        Message("user", "2+2?"),
        Message("assistant", "4"),
        Message("user", "and 3+3?"),
    ]
    spec = {**THREE_BY_TWO, "layers": [[{"model": "fake:a", "system": "Be careful."}]]}
    await mixture(spec, fake).arun(conversation)
    proposer, aggregator = fake.calls
    assert proposer.messages[0].content == "Answer in French.\n\nBe careful."
    assert [m.role for m in proposer.messages] == ["system", "user", "assistant", "user"]
    assert aggregator.messages[0].content.startswith("Answer in French.\n\n")
    assert [m.content for m in aggregator.messages[1:]] == ["2+2?", "4", "and 3+3?"]


async def test_failed_agent_is_recorded_and_the_layer_goes_on() -> None:
    fake = FakeProvider(replies={"b": ProviderStatusError("bad request", status_code=400)})
    events = [e async for e in mixture(THREE_BY_TWO, fake).astream("hi")]
    failed = [e for e in events if isinstance(e, AgentFailed)]
    assert len(failed) == 2  # b fails in both layers
    assert failed[0].result.error is not None and "bad request" in failed[0].result.error
    assert failed[0].result.attempts == 1  # 400 is not retried
    result = events[-1].result  # type: ignore[union-attr]
    assert [a.ok for a in result.layers[0].agents] == [True, False, True]
    aggregator_system = fake.calls_for("agg")[0].messages[0].content
    assert (
        "Candidate answer 2" in aggregator_system and "Candidate answer 3" not in aggregator_system
    )


async def test_quorum_not_met_names_every_failure() -> None:
    fake = FakeProvider(
        replies={
            "a": ProviderStatusError("boom-a", status_code=400),
            "b": ProviderStatusError("boom-b", status_code=400),
        }
    )
    spec = {**THREE_BY_TWO, "layers": [{"agents": THREE_BY_TWO["layers"][0], "min_ok": 2}]}
    with pytest.raises(QuorumError) as info:
        await mixture(spec, fake).arun("hi")
    assert "boom-a" in str(info.value) and "boom-b" in str(info.value)
    assert len(info.value.failures) == 2


async def test_retryable_errors_are_retried_then_succeed() -> None:
    fake = FakeProvider(
        replies={
            "a": [
                ProviderStatusError("upstream 503", status_code=503),
                RateLimitError("slow down", retry_after=0.05),
                "third time lucky",
            ]
        }
    )
    spec = {**THREE_BY_TWO, "layers": [[{"model": "fake:a"}]]}
    result = await mixture(spec, fake).arun("hi")
    agent = result.layers[0].agents[0]
    assert agent.output == "third time lucky"
    assert agent.attempts == 3
    assert agent.usage.calls == 3  # failed attempts are counted too


async def test_retries_running_out_fail_the_agent_not_the_run() -> None:
    fake = FakeProvider(replies={"a": ProviderStatusError("down", status_code=502)})
    spec = {**THREE_BY_TWO, "layers": [[{"model": "fake:a"}, {"model": "fake:b"}]]}
    result = await mixture(spec, fake).arun("hi")
    failed = result.layers[0].agents[0]
    assert not failed.ok and failed.attempts == 3 and "down" in (failed.error or "")
    assert result.output == "answer from agg"


async def test_timeout_is_per_attempt_and_recorded() -> None:
    fake = FakeProvider(delay={"a": 5.0})
    spec = {
        **THREE_BY_TWO,
        "layers": [[{"model": "fake:a", "timeout": 0.05}, {"model": "fake:b"}]],
        "retry": {"max_attempts": 2, "backoff_initial": 0.0},
    }
    result = await mixture(spec, fake).arun("hi")
    slow = result.layers[0].agents[0]
    assert slow.error_type == "ProviderTimeoutError" and slow.attempts == 2


async def test_aggregator_failure_raises_aggregation_error() -> None:
    fake = FakeProvider(replies={"agg": ProviderStatusError("nope", status_code=400)})
    with pytest.raises(AggregationError, match="nope"):
        await mixture(THREE_BY_TWO, fake).arun("hi")


async def test_usage_totals_add_every_call_including_the_aggregator() -> None:
    fake = FakeProvider(replies={"agg": "one two three four"})
    result = await mixture(THREE_BY_TWO, fake).arun("hi")
    calls = list(result.calls())
    assert len(calls) == 7
    assert result.usage.calls == 7
    assert result.usage.completion_tokens == sum(c.usage.completion_tokens for c in calls)
    assert result.aggregator.usage.completion_tokens == 4
    assert result.usage.prompt_tokens == sum(c.usage.prompt_tokens for c in calls) > 0


async def test_cost_is_computed_from_prices() -> None:
    fake = FakeProvider()
    spec = {**THREE_BY_TWO, "prices": {"fake:agg": {"input": 1_000_000.0, "output": 0.0}}}
    result = await mixture(spec, fake).arun("hi")
    assert result.cost == pytest.approx(result.aggregator.usage.prompt_tokens)
    assert all(a.cost is None for layer in result.layers for a in layer.agents)


async def test_stream_yields_typed_events_and_final_text_token_by_token() -> None:
    fake = FakeProvider(replies={"agg": "the final answer is here"})
    events = [e async for e in mixture(THREE_BY_TWO, fake).astream("hi")]
    kinds = [e.type for e in events]
    assert kinds[0] == "layer_started" and kinds[-1] == "done"
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == 5 and "".join(deltas) == "the final answer is here"
    starts = [e for e in events if isinstance(e, LayerStarted)]
    assert [(s.layer, s.role) for s in starts] == [
        (1, "proposer"),
        (2, "proposer"),
        (3, "aggregator"),
    ]
    assert sum(isinstance(e, AgentDone) for e in events) == 7
    assert isinstance(events[-1], Done) and events[-1].result.ttft_s is not None


async def test_request_params_apply_to_the_final_answer_and_extra_to_every_call() -> None:
    fake = FakeProvider()
    params = GenerationParams(max_tokens=7, extra={"vendor_flag": True})
    await mixture(THREE_BY_TWO, fake).arun("hi", params=params)
    assert fake.calls_for("agg")[0].params.max_tokens == 7
    assert all(c.params.max_tokens is None for c in fake.calls_for("a"))
    assert all(c.params.extra == {"vendor_flag": True} for c in fake.calls)


async def test_defaults_apply_under_agent_settings() -> None:
    fake = FakeProvider()
    spec = {
        **THREE_BY_TWO,
        "defaults": {"temperature": 0.7, "max_tokens": 100},
        "layers": [[{"model": "fake:a", "temperature": 0.1}, {"model": "fake:b", "seed": 3}]],
    }
    await mixture(spec, fake).arun("hi")
    a, b = fake.calls_for("a")[0].params, fake.calls_for("b")[0].params
    assert (a.temperature, a.max_tokens) == (0.1, 100)
    assert (b.temperature, b.seed) == (0.7, 3)


async def test_same_model_sampled_several_times_self_moa_shape() -> None:
    fake = FunctionProvider(lambda r: f"seed {r.params.seed}")
    spec = {
        "layers": [[{"model": "fn:m", "seed": s} for s in range(4)]],
        "aggregator": {"model": "fn:m"},
    }
    mix = Mixture(MixtureSpec.model_validate(spec), ProviderRegistry().add("fn", fake))
    result = await mix.arun("hi")
    assert [a.output for a in result.layers[0].agents] == [f"seed {s}" for s in range(4)]


async def test_zero_layers_is_a_single_model() -> None:
    fake = FakeProvider()
    result = await mixture({"aggregator": {"model": "fake:solo"}}, fake).arun("hi")
    assert result.output == "answer from solo" and result.layers == ()
    assert [m.role for m in fake.calls[0].messages] == ["user"]


async def test_provider_concurrency_limit_is_respected() -> None:
    fake = FakeProvider(delay=0.05, max_concurrency=2)
    spec = {"layers": [[{"model": "fake:a"}] * 6], "aggregator": {"model": "fake:agg"}}
    await mixture(spec, fake).arun("hi")
    assert fake.max_in_flight == 2


async def test_a_call_that_waits_for_the_limit_says_how_long() -> None:
    fake = FakeProvider(delay=0.1, max_concurrency=1)
    spec = {
        "layers": [[{"model": "fake:a"}, {"model": "fake:b"}]],
        "aggregator": {"model": "fake:agg"},
    }
    result = await mixture(spec, fake).arun("hi")
    first, second = sorted(result.layers[0].agents, key=lambda a: a.queued_s)
    assert first.queued_s < 0.05  # the slot was free
    assert second.queued_s >= 0.08  # it waited for the first call's 0.1 s
    assert second.latency_s >= second.queued_s + 0.09  # and its latency includes the wait
    assert result.aggregator.queued_s < 0.05
    assert first.to_dict()["queued_s"] == round(first.queued_s, 4)


async def test_a_provider_s_limit_counts_its_calls_by_its_concurrency_key() -> None:
    class PerModel(FakeProvider):
        def concurrency_key(self, request: CompletionRequest) -> Hashable:
            return request.model

    fake = PerModel(delay=0.05, max_concurrency=2)
    spec = {"layers": [[{"model": "fake:a"}] * 3 + [{"model": "fake:b"}] * 3]}
    await mixture({**spec, "aggregator": {"model": "fake:agg"}}, fake).arun("hi")
    assert fake.max_in_flight == 4  # two of each model at once


async def test_deadline_exceeded() -> None:
    from moa import DeadlineExceededError

    fake = FakeProvider(delay=1.0)
    with pytest.raises(DeadlineExceededError):
        await mixture({**THREE_BY_TWO, "deadline": 0.1}, fake).arun("hi")


async def test_closing_the_stream_early_cancels_running_calls() -> None:
    fake = FakeProvider(delay=5.0)
    stream = mixture(THREE_BY_TWO, fake).astream("hi")
    first = await stream.__anext__()
    assert isinstance(first, LayerStarted)
    await asyncio.sleep(0.05)
    await stream.aclose()
    assert fake.cancelled == 3 and fake.in_flight == 0


def test_sync_facade_runs_twice() -> None:
    fake = FakeProvider()
    mix = mixture(THREE_BY_TWO, fake)
    assert mix.run("one").output == mix.run("two").output == "answer from agg"
    events = list(mix.stream("three"))
    assert isinstance(events[-1], Done)


async def test_mixture_nests_as_a_provider() -> None:
    inner_fake = FakeProvider(replies={"agg": "inner answer"})
    inner = mixture(THREE_BY_TWO, inner_fake)
    outer_fake = FakeProvider()
    registry = ProviderRegistry().add("fake", outer_fake).add("inner", inner.as_provider())
    spec = {
        "layers": [[{"model": "inner:any"}, {"model": "fake:b"}]],
        "aggregator": {"model": "fake:agg"},
    }
    result = await Mixture(MixtureSpec.model_validate(spec), registry).arun("hi")
    assert result.layers[0].agents[0].output == "inner answer"
    assert result.layers[0].agents[0].usage.calls == 7


async def test_references_function_provider_sees_numbered_answers() -> None:
    def echo(request: CompletionRequest) -> str:
        return str(sum("<<< Candidate answer" in m.content for m in request.messages))

    fake = FunctionProvider(echo)
    spec = {"layers": [[{"model": "fn:a"}] * 4], "aggregator": {"model": "fn:agg"}}
    mix = Mixture(MixtureSpec.model_validate(spec), ProviderRegistry().add("fn", fake))
    result = await mix.arun("hi")
    assert result.output == "1"
    assert fake.calls[-1].messages[0].content.count("<<< Candidate answer") == 4


async def test_stream_timeout_bounds_stalls_not_answer_length() -> None:
    text = "one two three four five six seven eight nine ten"
    fake = FakeProvider(replies={"agg": text}, token_delay=0.04, delay={"slow": 1.0})
    spec = {
        "layers": [[{"model": "fake:slow"}, {"model": "fake:b"}]],
        "aggregator": {"model": "fake:agg", "timeout": 0.25},
        "timeout": 0.25,
        "retry": {"max_attempts": 1},
    }
    result = await mixture(spec, fake).arun("hi")
    # The aggregator streams for about 0.36 s in all, but never stalls 0.25 s: it succeeds.
    assert result.output == text
    # The proposer gives no first token for 1 s: a stall, so a timeout naming what it waited for.
    slow = result.layers[0].agents[0]
    assert slow.error_type == "ProviderTimeoutError" and "first token" in (slow.error or "")
