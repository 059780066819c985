from __future__ import annotations

import re
import time
from typing import Any

import pytest

from moa import (
    AgentDone,
    Done,
    LayerDone,
    Mixture,
    MixtureSpec,
    ProviderRegistry,
    QuorumError,
    TextDelta,
)
from moa.errors import ConfigError, FeatureUnavailableError
from moa.testing import FakeProvider, FunctionProvider
from moa.types import CompletionRequest

PROPOSAL = " ".join(f"p{i}" for i in range(40))
ANSWER = " ".join(f"w{i}" for i in range(30))


def continuing(full: str) -> FunctionProvider:
    """An aggregator that writes ``full``, continuing from any text it is given."""

    def reply(request: CompletionRequest) -> str:
        if request.continue_final:
            prefix = request.messages[-1].content
            assert full.startswith(prefix)
            return full[len(prefix) :]
        return full

    return FunctionProvider(reply, name="agg", token_delay=0.002)


def build(
    proposers: FakeProvider,
    aggregator: FakeProvider,
    *,
    options: dict[str, Any] | None = None,
    layers: list[Any] | None = None,
    aggregator_spec: dict[str, Any] | None = None,
) -> Mixture:
    three = [{"model": "p:a"}, {"model": "p:b"}, {"model": "p:c"}]
    spec = {
        "layers": layers if layers is not None else [three],
        "aggregator": {"model": "agg:final", **(aggregator_spec or {})},
        "strategy": {"type": "chunked", "chunk_tokens": 4, **(options or {})},
        "retry": {"max_attempts": 1},
    }
    registry = ProviderRegistry().add("p", proposers).add("agg", aggregator)
    return Mixture(MixtureSpec.model_validate(spec), registry)


def slow_proposers(**kwargs: Any) -> FakeProvider:
    return FakeProvider(default=PROPOSAL, token_delay=0.01, **kwargs)


def candidates(request: CompletionRequest) -> list[tuple[str, str]]:
    """(tag, text) of each reference in the aggregator's system message."""
    system = request.messages[0].content
    return re.findall(r"<<< (Candidate answer \d[^>]*) >>>\n(.*?)\n<<< end", system, re.S)


async def test_the_aggregator_starts_before_the_proposers_finish() -> None:
    proposers, aggregator = slow_proposers(), continuing(ANSWER)
    events = [e async for e in build(proposers, aggregator).astream("q")]
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    proposers_done = [
        i for i, e in enumerate(events) if isinstance(e, AgentDone) and e.result.role == "proposer"
    ]
    assert first_text < min(proposers_done)
    result = events[-1].result  # type: ignore[union-attr]
    assert isinstance(events[-1], Done)
    assert result.output == ANSWER
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == ANSWER
    assert result.ttft_s is not None
    assert result.ttft_s < min(a.latency_s for a in result.layers[0].agents)


async def test_references_grow_chunk_by_chunk_and_the_answer_is_continued() -> None:
    proposers, aggregator = slow_proposers(), continuing(ANSWER)
    result = await build(proposers, aggregator).arun("q")
    calls = aggregator.calls
    assert len(calls) >= 3
    lengths = [sum(len(text) for _, text in candidates(c)) for c in calls]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
    assert all("unfinished" in tag for tag, _ in candidates(calls[0]))
    assert not any("unfinished" in tag for tag, _ in candidates(calls[-1]))
    assert not calls[0].continue_final
    written = ""
    for call in calls[1:]:
        assert call.continue_final
        assert call.messages[-1].role == "assistant"
        assert call.messages[-1].content.startswith(written)
        written = call.messages[-1].content
    assert result.output == ANSWER
    assert result.aggregator.usage.calls == len(calls)
    assert "chunk-wise" in result.aggregator.notes[0]


async def test_chunks_grow_and_never_run_ahead_of_the_proposers() -> None:
    proposers, aggregator = slow_proposers(), continuing(ANSWER)
    await build(proposers, aggregator).arun("q")
    calls = aggregator.calls
    limits = [c.params.max_tokens for c in calls]
    assert limits[:3] == [4, 8, 16]
    for call in calls:
        references = candidates(call)
        if any("unfinished" in tag for tag, _ in references):
            written = len(call.messages[-1].content.split()) if call.continue_final else 0
            assert call.params.max_tokens is not None
            for _, text in references:
                assert len(text.split()) >= written + call.params.max_tokens


async def test_without_continuation_support_it_fails_before_any_call() -> None:
    class NoContinue(FakeProvider):
        supports_continue = False

    proposers, aggregator = slow_proposers(), NoContinue("plain")
    with pytest.raises(FeatureUnavailableError) as info:
        await build(proposers, aggregator).arun("q")
    message = str(info.value)
    assert "'plain'" in message and "vLLM" in message and "llama.cpp" in message
    assert "supports_continue" in message
    assert proposers.calls == [] and aggregator.calls == []


async def test_proposers_still_writing_are_stopped_once_the_answer_is_complete() -> None:
    proposers = FakeProvider(default=PROPOSAL * 5, token_delay=0.01)
    aggregator = continuing("short answer")
    start = time.perf_counter()
    result = await build(proposers, aggregator).arun("q")
    assert time.perf_counter() - start < 1.5  # the proposers alone would take 2s
    assert result.output == "short answer"
    assert proposers.cancelled == 3 and proposers.in_flight == 0
    layer = result.layers[0]
    assert all(a.partial and a.ok for a in layer.agents)
    assert "the final answer was complete" in layer.notes[-1]


async def test_earlier_layers_run_whole_before_the_streamed_layer() -> None:
    proposers = FakeProvider(
        replies={"a": ["first a", PROPOSAL], "b": ["first b", PROPOSAL]}, token_delay=0.005
    )
    aggregator = continuing(ANSWER)
    layer = [{"model": "p:a"}, {"model": "p:b"}]
    result = await build(proposers, aggregator, layers=[layer, layer]).arun("q")
    second_layer_call = proposers.calls_for("a")[1]
    assert "first b" in second_layer_call.messages[0].content
    assert [len(x.agents) for x in result.layers] == [2, 2]
    assert all(not a.partial for x in result.layers for a in x.agents)
    assert result.output == ANSWER


async def test_failed_proposers_drop_out_of_the_references() -> None:
    proposers = slow_proposers(replies={"c": RuntimeError("down")})
    aggregator = continuing(ANSWER)
    result = await build(proposers, aggregator).arun("q")
    assert all(len(candidates(c)) == 2 for c in aggregator.calls)
    assert [a.ok for a in result.layers[0].agents] == [True, True, False]


async def test_too_few_live_proposers_is_a_quorum_error() -> None:
    proposers = FakeProvider(replies={"a": RuntimeError("x"), "b": RuntimeError("y")})
    aggregator = continuing(ANSWER)
    three = [{"model": "p:a"}, {"model": "p:b"}, {"model": "p:c"}]
    with pytest.raises(QuorumError):
        await build(proposers, aggregator, layers=[{"agents": three, "min_ok": 2}]).arun("q")
    assert aggregator.calls == []


async def test_start_quorum_and_layer_deadline_leave_a_straggler_behind() -> None:
    proposers = slow_proposers(delay={"c": 5.0})
    aggregator = continuing(ANSWER)
    three = [{"model": "p:a"}, {"model": "p:b"}, {"model": "p:c"}]
    layers = [{"agents": three, "deadline": 0.6}]
    events = [
        e
        async for e in build(
            proposers, aggregator, options={"start_quorum": 2}, layers=layers
        ).astream("q")
    ]
    result = events[-1].result  # type: ignore[union-attr]
    assert result.ttft_s < 0.5
    assert result.output == ANSWER
    assert proposers.cancelled == 1
    layer = next(e.layer for e in events if isinstance(e, LayerDone))
    assert not layer.agents[2].ok
    assert any("layer deadline of 0.6s passed" in note for note in layer.notes)


async def test_the_answer_budget_holds_across_chunks() -> None:
    proposers, aggregator = slow_proposers(), continuing(ANSWER)
    mixture = build(proposers, aggregator, aggregator_spec={"max_tokens": 10})
    result = await mixture.arun("q")
    assert result.output == " ".join(ANSWER.split()[:10]) + " "
    assert sum(c.params.max_tokens or 0 for c in aggregator.calls) == 10
    assert result.aggregator.finish_reason == "length"


async def test_no_layers_is_the_aggregator_alone() -> None:
    aggregator = continuing(ANSWER)
    result = await build(FakeProvider(), aggregator, layers=[]).arun("q")
    assert result.output == ANSWER and len(aggregator.calls) == 1


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="chunk_token"):
        MixtureSpec.model_validate(
            {"aggregator": {"model": "a:b"}, "strategy": {"type": "chunked", "chunk_token": 3}}
        )


def test_config_error_names_the_option() -> None:
    from moa.config import parse_config

    with pytest.raises(ConfigError, match="growth"):
        parse_config(
            {"aggregator": {"model": "a:b"}, "strategy": {"type": "chunked", "growth": 0.5}}
        )


async def test_first_chunk_tokens_zero_opens_at_once_without_references() -> None:
    proposers = slow_proposers(delay=0.3)
    aggregator = continuing(ANSWER)
    result = await build(proposers, aggregator, options={"first_chunk_tokens": 0}).arun("q")
    assert result.ttft_s is not None and result.ttft_s < 0.3  # the proposers' first token
    assert candidates(aggregator.calls[0]) == []
    assert len(candidates(aggregator.calls[1])) == 3
    assert result.output == ANSWER
