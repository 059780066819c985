"""A strategy the mixture's providers cannot run: the request's mistake or the config's.

Chunk-wise aggregation needs an aggregator that can continue a final assistant
message; a plain OpenAI-compatible provider cannot. Chosen by the request's
``moa`` field, that is a 400 naming ``moa.strategy``; chosen by the mixture's own
config, the mixture is listed as unavailable and a request for it is a 500 the
SDK does not retry. Either way no upstream call is made.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import ServeFactory

from moa import Mixture, MixtureSpec, ProviderRegistry, ProviderSettings
from moa.testing.openai_server import FakeOpenAIServer, ModelBehavior

USER: Any = [{"role": "user", "content": "What is 2 + 2?"}]
CHUNKED = {"moa": {"strategy": {"type": "chunked"}}}
LAYERED = {"moa": {"strategy": {"type": "layered"}}}


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(default=ModelBehavior(text="It is 4.")) as server:
        yield server


def plain_mixture(upstream: FakeOpenAIServer, strategy: str) -> Mixture:
    """Proposers and an aggregator behind an OpenAI-compatible provider that cannot continue."""
    settings = {"up": ProviderSettings(base_url=upstream.base_url, requires_key=False)}
    spec = {
        "layers": [[{"model": "up:a"}, {"model": "up:b"}]],
        "aggregator": {"model": "up:agg"},
        "strategy": {"type": strategy},
    }
    return Mixture(MixtureSpec.model_validate(spec), ProviderRegistry(settings))


def client(base: str, max_retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=max_retries)


def says_which_servers_can(message: str) -> bool:
    return all(word in message for word in ("chunked", "vLLM", "llama.cpp", "supports_continue"))


def test_a_request_choosing_chunked_is_400_naming_the_field(
    serve: ServeFactory, upstream: FakeOpenAIServer
) -> None:
    base = serve(mixtures={"duo": plain_mixture(upstream, "layered")})
    with pytest.raises(openai.BadRequestError) as caught:
        client(base).chat.completions.create(model="duo", messages=USER, extra_body=CHUNKED)
    error = caught.value
    assert error.param == "moa.strategy" and error.code == "unsupported_value"
    assert isinstance(error.body, dict) and says_which_servers_can(error.body["message"])
    # Streamed, with progress asked for: still a plain 400, before the stream begins.
    body = {"model": "duo", "messages": USER, "stream": True}
    body["moa"] = {"strategy": {"type": "chunked"}, "progress": True}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=10) as response:
        assert response.status_code == 400
        assert json.loads(response.read())["error"]["param"] == "moa.strategy"
    assert upstream.requests == []
    # The mixture itself is fine.
    completion = client(base).chat.completions.create(model="duo", messages=USER)
    assert completion.choices[0].message.content == "It is 4."


def test_a_mixture_configured_for_chunked_is_unavailable(
    serve: ServeFactory, upstream: FakeOpenAIServer
) -> None:
    base = serve(mixtures={"staircase": plain_mixture(upstream, "chunked")})
    [model] = client(base).models.list().data
    assert model.model_extra is not None
    shape = model.model_extra["moa"]
    assert shape["strategy"] == "chunked" and shape["available"] is False
    assert says_which_servers_can(shape["problem"])
    # The SDK's default retries are on: the server tells it not to.
    with pytest.raises(openai.InternalServerError) as caught:
        client(base, max_retries=2).chat.completions.create(model="staircase", messages=USER)
    error = caught.value
    assert error.code == "mixture_misconfigured" and error.param is None
    assert error.response.headers["x-should-retry"] == "false"
    assert isinstance(error.body, dict) and says_which_servers_can(error.body["message"])
    assert chat_answers(base, "500") == 1
    assert upstream.requests == []
    # A request may still run it another way.
    completion = client(base).chat.completions.create(
        model="staircase", messages=USER, extra_body=LAYERED
    )
    assert completion.choices[0].message.content == "It is 4."


def chat_answers(base: str, status: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "moa_http_requests_total"
        and sample.labels == {"route": "/v1/chat/completions", "status": status}
    )
