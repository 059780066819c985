"""Every error arrives in the OpenAI shape with its status, so the SDK raises the right class."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import openai
import pytest
from pydantic import SecretStr
from server_helpers import MIXTURE, ServeFactory, fake_mixture

from moa import ProviderStatusError
from moa.testing import FakeProvider

USER = [{"role": "user", "content": "What is 2 + 2?"}]


def client(base: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


def test_unknown_model_is_404(serve: ServeFactory) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(serve()).chat.completions.create(model="gpt-17", messages=USER)
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"
    assert "fake-moa" in caught.value.message  # tells which names exist


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n": 2}, "n"),
        ({"temperature": 3}, "temperature"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0].type",
        ),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"logprobs": True}, "logprobs"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"moa": {"progres": True}}, "moa.progres"),
    ],
)
def test_invalid_requests_are_400_naming_the_parameter(
    serve: ServeFactory, body: dict[str, Any], param: str
) -> None:
    request = {"model": "fake-moa", "messages": USER, **body}
    response = httpx.post(f"{serve()}/v1/chat/completions", json=request)
    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_sdk_raises_bad_request(serve: ServeFactory) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(serve()).chat.completions.create(model="fake-moa", messages=USER, n=3)
    assert caught.value.param == "n"


def test_malformed_json_is_400(serve: ServeFactory) -> None:
    response = httpx.post(
        f"{serve()}/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert "not valid JSON" in error_of(response)["message"]


def test_api_keys(serve: ServeFactory) -> None:
    base = serve(api_keys=(SecretStr("k-one"), SecretStr("k-two")))
    with pytest.raises(openai.AuthenticationError):
        client(base, key="wrong").chat.completions.create(model="fake-moa", messages=USER)
    with pytest.raises(openai.AuthenticationError):
        client(base, key="wrong").models.list()
    missing = httpx.get(f"{base}/v1/models")
    assert missing.status_code == 401
    assert "Authorization: Bearer" in error_of(missing)["message"]
    for key in ("k-one", "k-two"):
        completion = client(base, key=key).chat.completions.create(model="fake-moa", messages=USER)
        assert completion.choices[0].message.content
    assert httpx.get(f"{base}/healthz").status_code == 200  # probes need no key


def test_body_too_large_is_413(serve: ServeFactory) -> None:
    base = serve(max_body_bytes=2048)
    big = [{"role": "user", "content": "x" * 5000}]
    with pytest.raises(openai.APIStatusError) as caught:
        client(base).chat.completions.create(model="fake-moa", messages=big)
    assert caught.value.status_code == 413

    def chunks() -> Any:  # no Content-Length: the limit applies while reading
        yield b'{"model": "fake-moa", "messages": [{"role": "user", "content": "'
        yield b"y" * 5000
        yield b'"}]}'

    response = httpx.post(f"{base}/v1/chat/completions", content=chunks())
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"


def test_too_many_messages_is_400(serve: ServeFactory) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(serve(max_messages=3)).chat.completions.create(model="fake-moa", messages=USER * 4)
    assert caught.value.code == "too_many_messages"


def test_over_the_concurrency_limit_is_429() -> None:
    from server_helpers import running

    from moa import ProviderRegistry
    from moa.server import ServerSettings, create_app

    slow = FakeProvider(delay=0.6)
    app = create_app(
        ServerSettings(include_presets=False, max_concurrent_requests=1),
        mixtures={"fake-moa": fake_mixture(slow)},
        providers=ProviderRegistry().add("fake", slow),
    )
    with running(app) as base:
        first = threading.Thread(
            target=lambda: client(base).chat.completions.create(model="fake-moa", messages=USER)
        )
        first.start()
        deadline = time.monotonic() + 5
        while not slow.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(openai.RateLimitError) as caught:
            client(base).chat.completions.create(model="fake-moa", messages=USER)
        assert caught.value.response.headers["retry-after"] == "1"
        first.join()
        # The slot is free again once the first answer is complete.
        assert client(base).chat.completions.create(model="fake-moa", messages=USER).choices


def failing(error: BaseException, **kwargs: Any) -> FakeProvider:
    return FakeProvider(replies={"a": error, "b": error, "c": error, "agg": error}, **kwargs)


def test_quorum_failure_is_502_before_and_during_streaming(serve: ServeFactory) -> None:
    broken = failing(ProviderStatusError("boom", status_code=500))
    base = serve(mixtures={"fake-moa": fake_mixture(broken)})
    with pytest.raises(openai.InternalServerError) as caught:
        client(base).chat.completions.create(model="fake-moa", messages=USER)
    assert caught.value.status_code == 502
    assert caught.value.code == "quorum_not_met"
    # A stream that has sent nothing yet still fails with a status.
    with pytest.raises(openai.InternalServerError) as streamed:
        client(base).chat.completions.create(model="fake-moa", messages=USER, stream=True)
    assert streamed.value.status_code == 502


def test_failure_after_progress_began_is_an_error_event(serve: ServeFactory) -> None:
    broken = failing(ProviderStatusError("boom", status_code=500))
    base = serve(mixtures={"fake-moa": fake_mixture(broken)})
    stream = client(base).chat.completions.create(
        model="fake-moa", messages=USER, stream=True, extra_body={"moa": {"progress": True}}
    )
    with pytest.raises(openai.APIError, match="fewer than 1 agent"):
        list(stream)


def test_aggregator_failure_is_502(serve: ServeFactory) -> None:
    fake = FakeProvider(replies={"agg": ProviderStatusError("down", status_code=503)})
    with pytest.raises(openai.InternalServerError) as caught:
        client(serve(mixtures={"fake-moa": fake_mixture(fake)})).chat.completions.create(
            model="fake-moa", messages=USER
        )
    assert caught.value.status_code == 502
    assert caught.value.code == "aggregation_failed"


def test_server_deadline_is_504_and_cancels_the_calls(serve: ServeFactory) -> None:
    slow = FakeProvider(delay=5.0)
    base = serve(mixtures={"fake-moa": fake_mixture(slow)}, request_deadline=0.3)
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        client(base).chat.completions.create(model="fake-moa", messages=USER)
    assert caught.value.status_code == 504
    assert caught.value.code == "deadline_exceeded"
    assert time.monotonic() - started < 3
    assert slow.cancelled == 3 and slow.in_flight == 0


def test_deadline_during_a_stream_is_an_error_event(serve: ServeFactory) -> None:
    slow = FakeProvider(delay=5.0)
    base = serve(mixtures={"fake-moa": fake_mixture(slow)}, request_deadline=0.3)
    stream = client(base).chat.completions.create(
        model="fake-moa", messages=USER, stream=True, extra_body={"moa": {"progress": True}}
    )
    with pytest.raises(openai.APIError, match="deadline"):
        list(stream)
    assert slow.in_flight == 0


def test_mixture_deadline_is_504(serve: ServeFactory) -> None:
    slow = FakeProvider(delay=5.0)
    spec = {**MIXTURE, "deadline": 0.2}
    with pytest.raises(openai.InternalServerError) as caught:
        client(serve(mixtures={"fake-moa": fake_mixture(slow, spec)})).chat.completions.create(
            model="fake-moa", messages=USER
        )
    assert caught.value.status_code == 504


def test_unknown_route_is_openai_shaped_404(serve: ServeFactory) -> None:
    response = httpx.get(f"{serve()}/v1/nothing-here")
    assert response.status_code == 404
    error_of(response)
