"""Progress events for MoA-aware clients, and cancellation when the client goes away."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest
from server_helpers import ANSWER, ServeFactory, fake_mixture

from moa import Mixture, MixtureSpec, ProviderRegistry, ProviderStatusError
from moa.testing import FakeProvider, FunctionProvider
from moa.types import CompletionRequest

USER = [{"role": "user", "content": "What is 2 + 2?"}]


def sse_chunks(base: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    request = {"model": "fake-moa", "messages": USER, "stream": True, **body}
    chunks: list[dict[str, Any]] = []
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=request) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        assert line.startswith("data: ")
        chunks.append(json.loads(line[len("data: ") :]))
    return chunks


def progress_of(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["moa"] for c in chunks if "moa" in c and not c["choices"]]


def test_progress_events_show_every_layer_before_the_answer(serve: ServeFactory) -> None:
    chunks = sse_chunks(serve(), {"moa": {"progress": True}})
    events = progress_of(chunks)
    kinds = [e["type"] for e in events]
    assert kinds == [
        "layer_started",
        "agent_done",
        "agent_done",
        "agent_done",
        "layer_done",
        "layer_started",
        "agent_done",
    ]
    assert events[0]["agents"] == ["L1.1 fake:a", "L1.2 fake:b", "L1.3 fake:c"]
    assert {e["output"] for e in events[1:4]} == {"alpha: 4", "beta: 5", "gamma: 4"}
    assert all("latency_s" in e and "usage" in e for e in events[1:4])
    assert events[5]["role"] == "aggregator"
    # Progress chunks are ordinary chunk objects, so standard parsers accept them.
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    texts = [
        i for i, c in enumerate(chunks) if c["choices"] and c["choices"][0]["delta"].get("content")
    ]
    progress = [i for i, c in enumerate(chunks) if "moa" in c and not c["choices"]]
    # Proposers finish before the answer streams; the aggregator is reported when it is done.
    assert progress[5] < texts[0] and progress[6] > texts[-1]
    assert (
        "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        == ANSWER
    )
    assert chunks[-1]["moa"]["type"] == "done" and chunks[-1]["moa"]["trace_id"]


def test_agent_deltas_stream_the_intermediate_answers(serve: ServeFactory) -> None:
    events = progress_of(sse_chunks(serve(), {"moa": {"agent_deltas": True}}))
    deltas = [e for e in events if e["type"] == "agent_delta"]
    text = {index: "".join(d["text"] for d in deltas if d["index"] == index) for index in range(3)}
    assert text == {0: "alpha: 4", 1: "beta: 5", 2: "gamma: 4"}
    assert len(deltas) > 3  # token by token, not whole answers


def test_failed_agents_are_reported(serve: ServeFactory) -> None:
    fake = FakeProvider(replies={"b": ProviderStatusError("overloaded", status_code=500)})
    events = progress_of(
        sse_chunks(serve(mixtures={"fake-moa": fake_mixture(fake)}), {"moa": {"progress": True}})
    )
    failed = [e for e in events if e["type"] == "agent_failed"]
    assert len(failed) == 1 and "overloaded" in failed[0]["error"]
    assert next(e for e in events if e["type"] == "layer_done") == {
        "type": "layer_done",
        "layer": 1,
        "ok": 2,
        "failed": 1,
    }


def test_a_layer_drawn_in_two_waves_is_done_once_with_all_five_samples(
    serve: ServeFactory,
) -> None:
    def sample(request: CompletionRequest) -> str:
        seed = request.params.seed or 0
        return f"sample {seed}: the answer is {'78788'[seed]}"

    strategy = {"type": "vote", "samples": 5, "greedy_first": True, "adaptive": True}
    spec = MixtureSpec.model_validate({"aggregator": {"model": "fake:m"}, "strategy": strategy})
    vote = Mixture(spec, ProviderRegistry().add("fake", FunctionProvider(sample)))
    chunks = sse_chunks(serve(mixtures={"fake-moa": vote}), {"moa": {"progress": True}})
    events = progress_of(chunks)
    assert [e["type"] for e in events] == [
        "layer_started",
        *["agent_done"] * 3,
        "layer_started",
        *["agent_done"] * 2,
        "layer_done",
    ]
    first, more = (e for e in events if e["type"] == "layer_started")
    assert (first["layer"], first["first_index"], len(first["agents"])) == (1, 0, 3)
    assert (more["layer"], more["first_index"], len(more["agents"])) == (1, 3, 2)
    assert sorted(e["index"] for e in events if e["type"] == "agent_done") == [0, 1, 2, 3, 4]
    assert events[-1] == {"type": "layer_done", "layer": 1, "ok": 5, "failed": 0}


def test_sdk_reads_a_progress_stream(serve: ServeFactory) -> None:
    api = openai.OpenAI(base_url=f"{serve()}/v1", api_key="x", max_retries=0)
    stream = api.chat.completions.create(
        model="fake-moa", messages=USER, stream=True, extra_body={"moa": {"progress": True}}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    kinds = [c.model_extra["moa"]["type"] for c in chunks if not c.choices]
    assert kinds[0] == "layer_started"


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_cancels_the_upstream_calls(serve: ServeFactory, stream: bool) -> None:
    slow = FakeProvider(delay=5.0)
    base = serve(mixtures={"fake-moa": fake_mixture(slow)})
    request = {"model": "fake-moa", "messages": USER, "stream": stream}
    if stream:
        request["moa"] = {"progress": True}
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=request) as response:
            lines = response.iter_lines()
            assert '"role":"assistant"' in next(lines)
            next(lines)  # the blank line ending the event
            assert "layer_started" in next(lines)
    else:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base}/v1/chat/completions", json=request, timeout=0.5)
    deadline = time.monotonic() + 3
    while slow.cancelled < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert slow.cancelled == 3
    assert slow.in_flight == 0
