from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from moa.testing import FakeOpenAIServer, ModelBehavior


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    models = {
        "echo": ModelBehavior(text=lambda body: body["messages"][-1]["content"].upper()),
        "slow": ModelBehavior(text="a b c d e", tokens_per_second=20),
        "flaky": ModelBehavior(text="ok", failures=[(429, 2.0), (503, None)]),
    }
    with FakeOpenAIServer(models) as running:
        yield running


def chat(model: str, content: str = "hello", **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **fields}


def sse_payloads(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def test_chat_completion_shape(server: FakeOpenAIServer) -> None:
    response = httpx.post(f"{server.base_url}/chat/completions", json=chat("echo", "hi there"))
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "echo"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "HI THERE"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 2
    assert server.requests == [chat("echo", "hi there")]


def test_streaming_sends_chunks_usage_and_done(server: FakeOpenAIServer) -> None:
    body = chat("slow", stream=True, stream_options={"include_usage": True})
    response = httpx.post(f"{server.base_url}/chat/completions", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    deltas = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
    assert "".join(deltas) == "a b c d e"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5


def test_streaming_without_usage_option_sends_no_usage(server: FakeOpenAIServer) -> None:
    response = httpx.post(f"{server.base_url}/chat/completions", json=chat("echo", stream=True))
    chunks = [json.loads(p) for p in sse_payloads(response.text)[:-1]]
    assert all("usage" not in c for c in chunks)


def test_streaming_paces_tokens(server: FakeOpenAIServer) -> None:
    started = time.perf_counter()
    arrivals = []
    url = f"{server.base_url}/chat/completions"
    with httpx.stream("POST", url, json=chat("slow", stream=True)) as response:
        for line in response.iter_lines():
            if '"content": "' in line and '"content": ""' not in line:
                arrivals.append(time.perf_counter() - started)
    assert len(arrivals) == 5
    assert arrivals[-1] - arrivals[0] >= 0.18  # four gaps of 50 ms


def test_scripted_failures_then_success(server: FakeOpenAIServer) -> None:
    url = f"{server.base_url}/chat/completions"
    first = httpx.post(url, json=chat("flaky"))
    assert first.status_code == 429 and first.headers["retry-after"] == "2"
    assert first.json()["error"]["type"] == "rate_limit_exceeded"
    second = httpx.post(url, json=chat("flaky"))
    assert second.status_code == 503 and "retry-after" not in second.headers
    assert httpx.post(url, json=chat("flaky")).status_code == 200
    assert [r.status for r in server.records] == [429, 503, 200]


def test_errors_have_the_openai_shape(server: FakeOpenAIServer) -> None:
    url = f"{server.base_url}/chat/completions"
    unknown = httpx.post(url, json=chat("nope"))
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]["message"]
    broken = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "message" in broken.json()["error"]
    empty = httpx.post(url, json={"model": "echo", "messages": []})
    assert empty.status_code == 400


def test_required_key() -> None:
    with FakeOpenAIServer(default=ModelBehavior(require_key="k-1")) as server:
        url = f"{server.base_url}/chat/completions"
        assert httpx.post(url, json=chat("x")).status_code == 401
        wrong = httpx.post(url, json=chat("x"), headers={"Authorization": "Bearer k-2"})
        assert wrong.status_code == 401 and "k-2" not in wrong.text
        right = httpx.post(url, json=chat("x"), headers={"Authorization": "Bearer k-1"})
        assert right.status_code == 200


def test_continue_final_message_continues_the_prefix() -> None:
    with FakeOpenAIServer(default=ModelBehavior(text="The answer is 42.")) as server:
        body = {
            "model": "m",
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "The answer"},
            ],
            "continue_final_message": True,
            "add_generation_prompt": False,
        }
        response = httpx.post(f"{server.base_url}/chat/completions", json=body)
        assert response.json()["choices"][0]["message"]["content"] == " is 42."
        body["messages"] = body["messages"][:1]
        refused = httpx.post(f"{server.base_url}/chat/completions", json=body)
        assert refused.status_code == 400


def test_list_models(server: FakeOpenAIServer) -> None:
    data = httpx.get(f"{server.base_url}/models").json()
    assert data["object"] == "list"
    assert sorted(m["id"] for m in data["data"]) == ["echo", "flaky", "slow"]


def test_without_models_every_name_answers() -> None:
    with FakeOpenAIServer() as server:
        response = httpx.post(f"{server.base_url}/chat/completions", json=chat("anything"))
        assert response.status_code == 200


def test_fixed_latency_without_streaming() -> None:
    with FakeOpenAIServer(default=ModelBehavior(latency=0.3)) as server:
        started = time.perf_counter()
        httpx.post(f"{server.base_url}/chat/completions", json=chat("m"))
        assert time.perf_counter() - started >= 0.3
        assert server.records[0].duration >= 0.3


async def test_hundreds_of_concurrent_streams() -> None:
    behavior = ModelBehavior(text="one two three four five", first_token_delay=0.2)
    behavior.tokens_per_second = 20.0  # each stream lasts about 0.4 s
    with FakeOpenAIServer(default=behavior) as server:
        limits = httpx.Limits(max_connections=300)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=60) as client:

            async def one(i: int) -> str:
                response = await client.post("/chat/completions", json=chat(f"m{i}", stream=True))
                return response.text

            started = time.perf_counter()
            texts = await asyncio.gather(*(one(i) for i in range(200)))
            elapsed = time.perf_counter() - started
    assert all(t.rstrip().endswith("data: [DONE]") for t in texts)
    assert len(server.records) == 200
    # One after another this would take 80 s; concurrently it is the length of one stream
    # plus the cost of handling 200 connections on a small machine.
    assert elapsed < 15


def test_importing_moa_testing_does_not_need_starlette() -> None:
    code = (
        "import sys, moa.testing\n"
        "assert 'starlette' not in sys.modules and 'uvicorn' not in sys.modules\n"
        "assert moa.testing.FakeOpenAIServer.__name__ == 'FakeOpenAIServer'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_base_url_needs_a_running_server() -> None:
    server = FakeOpenAIServer()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.base_url


def _most_at_once(records: list[Any]) -> int:
    edges = sorted([(r.started, 1) for r in records] + [(r.finished, -1) for r in records])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize("stream", [False, True])
def test_max_concurrent_queues_calls_past_the_limit(stream: bool) -> None:
    behavior = ModelBehavior(text="one two", latency=0.2)
    with FakeOpenAIServer(default=behavior, max_concurrent=2) as server:

        async def burst() -> list[int]:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
                calls = [
                    client.post("/chat/completions", json=chat("m", stream=stream))
                    for _ in range(6)
                ]
                return [r.status_code for r in await asyncio.gather(*calls)]

        started = time.perf_counter()
        assert asyncio.run(burst()) == [200] * 6
        elapsed = time.perf_counter() - started
        assert len(server.records) == 6
        assert _most_at_once(server.records) == 2
        assert elapsed >= 3 * 0.2 * 0.95  # six calls, two at a time
    with pytest.raises(ValueError, match="max_concurrent"):
        FakeOpenAIServer(max_concurrent=0)
