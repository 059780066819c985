"""The official openai SDK against a real server: what any OpenAI client sees."""

from __future__ import annotations

import asyncio

import openai
import pytest
from server_helpers import ANSWER, ServeFactory, fake_mixture

from moa.testing import FakeProvider

USER = [{"role": "user", "content": "What is 2 + 2?"}]


def client(base: str, **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, **kwargs)  # type: ignore[arg-type]


def test_sync_completion_sums_usage_over_every_call(
    serve: ServeFactory, fake: FakeProvider
) -> None:
    raw = client(serve()).chat.completions.with_raw_response.create(model="fake-moa", messages=USER)
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.model == "fake-moa"
    assert completion.choices[0].message.content == ANSWER
    assert completion.choices[0].finish_reason == "stop"
    assert len(fake.calls) == 4  # three proposers and the aggregator
    details = completion.model_extra["moa"]
    calls = [a for layer in details["layers"] for a in layer["agents"]] + [details["aggregator"]]
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == sum(c["usage"]["prompt_tokens"] for c in calls)
    assert completion.usage.completion_tokens == sum(c["usage"]["completion_tokens"] for c in calls)
    assert details["usage"]["calls"] == 4
    assert [a["output"] for a in details["layers"][0]["agents"]] == [
        "alpha: 4",
        "beta: 5",
        "gamma: 4",
    ]
    assert raw.headers["x-moa-trace-id"] == details["trace_id"]


async def test_async_client_and_concurrent_requests(serve: ServeFactory) -> None:
    base = serve()
    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0) as aclient:
        completions = await asyncio.gather(
            *(aclient.chat.completions.create(model="fake-moa", messages=USER) for _ in range(5))
        )
    assert {c.choices[0].message.content for c in completions} == {ANSWER}
    assert len({c.id for c in completions}) == 5


def test_stream_without_usage(serve: ServeFactory) -> None:
    fake = FakeProvider(replies={"agg": ANSWER}, token_delay=0.01)
    base = serve(mixtures={"fake-moa": fake_mixture(fake)})
    chunks = list(
        client(base).chat.completions.create(model="fake-moa", messages=USER, stream=True)
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    # Real streaming: the answer arrives in several pieces, not as one event.
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 4
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].model_extra["moa"]["usage"]["calls"] == 4


def test_stream_with_include_usage(serve: ServeFactory) -> None:
    base = serve()
    stream = client(base).chat.completions.create(
        model="fake-moa", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.total_tokens > 0
    reference = client(base).chat.completions.create(model="fake-moa", messages=USER)
    assert reference.usage is not None
    assert last.usage.prompt_tokens == reference.usage.prompt_tokens
    assert last.usage.completion_tokens == reference.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_models_list_and_retrieve(serve: ServeFactory) -> None:
    api = client(serve())
    models = api.models.list()
    assert [m.id for m in models.data] == ["fake-moa"]
    assert models.data[0].owned_by == "moa"
    model = api.models.retrieve("fake-moa")
    assert model.model_extra["moa"]["aggregator"] == "fake:agg"
    with pytest.raises(openai.NotFoundError):
        api.models.retrieve("no-such-mixture")


def test_models_say_which_mixtures_cannot_run_here(
    serve: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moa import Mixture, MixtureSpec, ProviderRegistry, ProviderSettings

    monkeypatch.delenv("TEST_UNSET_KEY", raising=False)
    settings = {
        "keyed": ProviderSettings(base_url="http://127.0.0.1:9/v1", api_key_env="TEST_UNSET_KEY")
    }
    spec = MixtureSpec.model_validate({"aggregator": {"model": "keyed:m"}})
    keyed = Mixture(spec, ProviderRegistry(settings))
    base = serve(mixtures={"keyed": keyed, "fake-moa": fake_mixture(FakeProvider())})
    shapes = {m.id: m.model_extra["moa"] for m in client(base).models.list().data}
    assert shapes["fake-moa"]["available"] is True and shapes["fake-moa"]["problem"] is None
    assert shapes["keyed"]["available"] is False
    assert "TEST_UNSET_KEY" in shapes["keyed"]["problem"]
    with pytest.raises(openai.InternalServerError) as caught:
        client(base).chat.completions.create(model="keyed", messages=USER)
    assert caught.value.code == "mixture_misconfigured"


def test_passthrough_to_one_model(serve: ServeFactory, fake: FakeProvider) -> None:
    completion = client(serve()).chat.completions.create(model="fake:solo", messages=USER)
    assert completion.choices[0].message.content == "answer from solo"
    assert [c.model for c in fake.calls] == ["solo"]


def test_passthrough_can_be_switched_off(serve: ServeFactory) -> None:
    with pytest.raises(openai.NotFoundError):
        client(serve(allow_passthrough=False)).chat.completions.create(
            model="fake:solo", messages=USER
        )


def test_request_parameters_reach_the_calls(serve: ServeFactory, fake: FakeProvider) -> None:
    client(serve()).chat.completions.create(
        model="fake-moa",
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "What is 2 + 2?"},
        ],
        temperature=0.2,
        max_completion_tokens=3,
        stop=["###"],
        seed=7,
        frequency_penalty=0.5,
        user="someone",
        extra_body={"repetition_penalty": 1.1},
    )
    final = fake.calls_for("agg")[0]
    assert final.params.temperature == 0.2
    assert final.params.max_tokens == 3
    assert final.params.stop == ("###",)
    assert final.params.seed == 7
    for call in fake.calls:  # vendor fields go to every call; the caller's identity does not
        assert call.params.extra["frequency_penalty"] == 0.5
        assert call.params.extra["repetition_penalty"] == 1.1
        assert "user" not in call.params.extra
    proposer = fake.calls_for("a")[0]
    assert proposer.params.max_tokens is None  # request limits shape the final answer only
    assert [m.role for m in proposer.messages][-3:] == ["user", "assistant", "user"]
    assert proposer.messages[0].role == "system" and "Be brief." in proposer.messages[0].content


def test_max_tokens_truncates_the_answer(serve: ServeFactory) -> None:
    completion = client(serve()).chat.completions.create(
        model="fake-moa", messages=USER, max_tokens=2
    )
    assert completion.choices[0].message.content == "The final "
    assert completion.choices[0].finish_reason == "length"


def test_passthrough_can_be_limited_to_an_allow_list(
    serve: ServeFactory, fake: FakeProvider
) -> None:
    base = serve(passthrough_models=("fake:solo", "fake:cheap-*"))
    for model in ("fake:solo", "fake:cheap-1"):
        client(base).chat.completions.create(model=model, messages=USER)
    with pytest.raises(openai.NotFoundError) as caught:
        client(base).chat.completions.create(model="fake:expensive", messages=USER)
    assert "matching fake:solo, fake:cheap-*" in caught.value.message
    assert [c.model for c in fake.calls] == ["solo", "cheap-1"]
