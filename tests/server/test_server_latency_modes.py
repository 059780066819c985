"""A request picks its latency mode with the ``moa`` field (strategy, quorum, deadlines)."""

from __future__ import annotations

import json
from typing import Any

import httpx
from server_helpers import ServeFactory, fake_mixture

from moa import Mixture, MixtureSpec, ProviderRegistry
from moa.testing import FakeProvider, FunctionProvider
from moa.types import CompletionRequest

USER = [{"role": "user", "content": "What is 2 + 2?"}]
ANSWER = "two and two make four, as every child who counts on fingers knows well"


def continuing(request: CompletionRequest) -> str:
    if request.continue_final:
        return ANSWER[len(request.messages[-1].content) :]
    return ANSWER


def staircase_mixture() -> Mixture:
    proposers = FakeProvider(default=" ".join(f"p{i}" for i in range(40)), token_delay=0.01)
    spec = {
        "name": "fake-moa",
        "layers": [[{"model": "fake:a"}, {"model": "fake:b"}]],
        "aggregator": {"model": "agg:final"},
    }
    registry = ProviderRegistry().add("fake", proposers).add("agg", FunctionProvider(continuing))
    return Mixture(MixtureSpec.model_validate(spec), registry)


def post(base: str, body: dict[str, Any]) -> httpx.Response:
    request = {"model": "fake-moa", "messages": USER, **body}
    return httpx.post(f"{base}/v1/chat/completions", json=request, timeout=30)


def test_a_request_can_choose_chunk_wise_aggregation(serve: ServeFactory) -> None:
    base = serve(mixtures={"fake-moa": staircase_mixture()})
    body = {
        "model": "fake-moa",
        "messages": USER,
        "stream": True,
        "moa": {"strategy": {"type": "chunked", "chunk_tokens": 2}, "progress": True},
    }
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    chunks = [json.loads(line[len("data: ") :]) for line in lines]
    first_text = next(
        i for i, c in enumerate(chunks) if c["choices"] and c["choices"][0]["delta"].get("content")
    )
    proposer_done = [
        i
        for i, c in enumerate(chunks)
        if c.get("moa", {}).get("type") == "agent_done" and c["moa"]["role"] == "proposer"
    ]
    assert first_text < min(proposer_done)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == ANSWER


def test_without_the_field_the_configured_strategy_runs(serve: ServeFactory) -> None:
    fake = FakeProvider(delay={"c": 0.3})
    base = serve(mixtures={"fake-moa": fake_mixture(fake)})
    assert post(base, {}).status_code == 200
    assert fake.cancelled == 0


def test_a_request_can_choose_a_quorum(serve: ServeFactory) -> None:
    fake = FakeProvider(delay={"c": 10.0})
    base = serve(mixtures={"fake-moa": fake_mixture(fake)})
    response = post(base, {"moa": {"quorum": 2}})
    assert response.status_code == 200
    assert fake.cancelled == 1


def test_bad_modes_are_400_naming_the_field(serve: ServeFactory) -> None:
    base = serve()
    response = post(base, {"moa": {"strategy": {"type": "nope"}}})
    assert response.status_code == 400
    assert "unknown strategy 'nope'" in response.json()["error"]["message"]
    response = post(base, {"moa": {"quorum": 0}})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "moa.quorum"
    response = post(base, {"moa": {"layers": []}})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "moa.layers"
