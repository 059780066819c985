"""Upstream failures through ``moa serve``: an answer with the failure recorded, or an
OpenAI-shaped error; never a hang, streaming or not."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from server_helpers import running

from moa import Mixture, MixtureSpec, ProviderRegistry, ProviderSettings
from moa.server import ServerSettings, create_app
from moa.testing.faulty_server import ANSWER, FAULTS, FaultyOpenAIServer

USER = [{"role": "user", "content": "What is 2 + 2?"}]
BOUND_S = 10.0
MID_ANSWER = {"stall", "truncated", "malformed"}  # the aggregator fails after its first token


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with FaultyOpenAIServer() as upstream:
        registry = ProviderRegistry(
            {"up": ProviderSettings(base_url=upstream.base_url, requires_key=False, timeout=5)}
        )
        common = {
            "timeout": 0.5,
            "retry": {"max_attempts": 2, "backoff_initial": 0.01, "backoff_max": 0.1},
        }
        mixtures: dict[str, Mixture] = {}
        for fault in FAULTS:
            proposer = {
                "layers": [[{"model": "up:ok-a"}, {"model": f"up:{fault}"}]],
                "aggregator": {"model": "up:ok-agg"},
            }
            aggregator = {
                "layers": [[{"model": "up:ok-a"}, {"model": "up:ok-b"}]],
                "aggregator": {"model": f"up:{fault}"},
            }
            for name, spec in ((f"p-{fault}", proposer), (f"a-{fault}", aggregator)):
                mixtures[name] = Mixture(MixtureSpec.model_validate({**common, **spec}), registry)
        app = create_app(ServerSettings(include_presets=False), mixtures=mixtures)
        with running(app) as url:
            yield url


def ask(base: str, model: str, stream: bool) -> tuple[int, str]:
    started = time.perf_counter()
    body = {"model": model, "messages": USER, "stream": stream}
    with httpx.Client(base_url=base, timeout=BOUND_S) as client:
        response = client.post("/v1/chat/completions", json=body)
    assert time.perf_counter() - started < BOUND_S
    return response.status_code, response.text


def openai_error(payload: dict[str, Any]) -> dict[str, Any]:
    error: dict[str, Any] = payload["error"]
    assert error["message"] and error["type"] in ("upstream_error", "timeout_error"), error
    return error


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("fault", FAULTS)
def test_a_failing_proposer_is_recorded_in_the_answer(base: str, fault: str, stream: bool) -> None:
    status, text = ask(base, f"p-{fault}", stream)
    assert status == 200, text
    if not stream:
        body = json.loads(text)
        assert body["choices"][0]["message"]["content"] == ANSWER
        agents = body["moa"]["layers"][0]["agents"]
        failed = [a for a in agents if a["model"] == f"up:{fault}"]
        assert failed and failed[0]["ok"] is False and failed[0]["error"]
        return
    chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content == ANSWER and text.rstrip().endswith("data: [DONE]")
    summary = next(c["moa"] for c in chunks if c.get("moa") and c["choices"])
    assert [f["model"] for f in summary["failed"]] == [f"up:{fault}"], summary


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("fault", FAULTS)
def test_a_failing_aggregator_is_an_openai_error(base: str, fault: str, stream: bool) -> None:
    status, text = ask(base, f"a-{fault}", stream)
    if not stream or fault not in MID_ANSWER:
        # Nothing was sent yet (a stream waits for its first byte to send its status).
        assert status in (502, 504), text
        assert f"up:{fault}" in openai_error(json.loads(text))["message"]
        return
    assert status == 200  # the answer had begun: the error comes as the stream's last event
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert f"up:{fault}" in openai_error(events[-1])["message"]
