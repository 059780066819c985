from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from moa import (
    AggregationError,
    FeatureUnavailableError,
    GenerationParams,
    Message,
    MissingAPIKeyError,
    Mixture,
    MixtureSpec,
    ProviderConnectionError,
    ProviderRegistry,
    ProviderSettings,
    ProviderStatusError,
    ProviderTimeoutError,
    RateLimitError,
)
from moa.config import load_mixture
from moa.providers.endpoints import BUILTIN_PROVIDERS
from moa.providers.openai_compat import OpenAICompatProvider, parse_retry_after
from moa.providers.settings import DEFAULT_KEEPALIVE
from moa.testing import FakeOpenAIServer, ModelBehavior
from moa.types import CompletionChunk, CompletionRequest

SECRET = "sk-test-0123456789abcdef"


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeOpenAIServer]]:
    servers: list[FakeOpenAIServer] = []

    def start(
        models: dict[str, ModelBehavior] | None = None, default: ModelBehavior | None = None
    ) -> FakeOpenAIServer:
        server = FakeOpenAIServer(models, default).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
async def providers() -> AsyncIterator[Callable[..., OpenAICompatProvider]]:
    made: list[OpenAICompatProvider] = []

    def make(base_url: str, **kwargs: Any) -> OpenAICompatProvider:
        provider = OpenAICompatProvider("fake", base_url=base_url, **kwargs)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


def ask(model: str, text: str = "What is 2+2?", **params: Any) -> CompletionRequest:
    return CompletionRequest(model, (Message("user", text),), GenerationParams(**params))


def mixture_over(provider: OpenAICompatProvider, **spec: object) -> Mixture:
    data = {
        "layers": [[{"model": "fake:a"}, {"model": "fake:b"}]],
        "aggregator": {"model": "fake:agg"},
        "retry": {"max_attempts": 3, "backoff_initial": 0.0, "jitter": False},
        **spec,
    }
    return Mixture(MixtureSpec.model_validate(data), ProviderRegistry().add("fake", provider))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- answers --------------------------------------------------------------------------


async def test_complete_returns_text_usage_and_finish_reason(serve, providers) -> None:
    server = serve({"a": ModelBehavior(text="four")})
    completion = await providers(server.base_url).complete(ask("a"))
    assert completion.text == "four"
    assert completion.finish_reason == "stop"
    assert completion.usage.completion_tokens == 1
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.calls == 1
    assert server.requests[0]["messages"] == [{"role": "user", "content": "What is 2+2?"}]
    assert "stream" not in server.requests[0]


async def test_stream_arrives_token_by_token_and_ends_with_usage(serve, providers) -> None:
    text = "one two three four five six"
    server = serve({"a": ModelBehavior(text=text, tokens_per_second=40)})
    arrivals: list[tuple[float, CompletionChunk]] = []
    async for chunk in providers(server.base_url).stream(ask("a")):
        arrivals.append((time.perf_counter(), chunk))
    texts = [c.text for _, c in arrivals if c.text]
    assert "".join(texts) == text
    assert len(texts) == 6  # one chunk per token, not the whole answer at once
    first, last_text = arrivals[0][0], arrivals[len(texts) - 1][0]
    assert last_text - first > 0.08  # five gaps of 25 ms: the chunks really arrived over time
    final = arrivals[-1][1]
    assert final.text == "" and final.finish_reason == "stop"
    assert final.usage is not None and final.usage.completion_tokens == 6
    assert server.requests[0]["stream"] is True
    assert server.requests[0]["stream_options"] == {"include_usage": True}


async def test_parameters_and_extra_fields_reach_the_server(serve, providers) -> None:
    server = serve({"a": ModelBehavior(text="x")})
    provider = providers(
        server.base_url, extra_body={"top_k": 20, "min_p": 0.1}, headers={"X-Trace": "t-1"}
    )
    request = ask(
        "a",
        temperature=0.3,
        top_p=0.9,
        max_tokens=7,
        stop=("END",),
        seed=5,
        extra={"repetition_penalty": 1.1, "min_p": 0.2},
    )
    await provider.complete(request)
    body = server.requests[0]
    assert body["model"] == "a"
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.3, 0.9, 7)
    assert (body["stop"], body["seed"]) == (["END"], 5)
    assert body["top_k"] == 20 and body["repetition_penalty"] == 1.1
    assert body["min_p"] == 0.2  # the call's own extra wins over the provider's
    assert "continue_final_message" not in body


async def test_unset_parameters_are_not_sent(serve, providers) -> None:
    server = serve({"a": ModelBehavior(text="x")})
    await providers(server.base_url).complete(ask("a"))
    assert set(server.requests[0]) == {"model", "messages"}


async def test_max_tokens_truncation_is_reported(serve, providers) -> None:
    server = serve({"a": ModelBehavior(text="a b c d e")})
    completion = await providers(server.base_url).complete(ask("a", max_tokens=2))
    assert completion.text == "a b "
    assert completion.finish_reason == "length"


# -- keys -----------------------------------------------------------------------------


async def test_key_from_env_var_is_sent(serve, monkeypatch) -> None:
    server = serve({"a": ModelBehavior(text="ok", require_key=SECRET)})
    monkeypatch.setenv("FAKE_KEY", SECRET)
    settings = ProviderSettings(base_url=server.base_url, api_key_env="FAKE_KEY")
    provider = OpenAICompatProvider.from_settings("fake", settings)
    try:
        assert (await provider.complete(ask("a"))).text == "ok"
    finally:
        await provider.aclose()
    assert SECRET not in repr(provider)


def test_missing_key_names_the_env_var(monkeypatch) -> None:
    monkeypatch.delenv("FAKE_KEY", raising=False)
    settings = ProviderSettings(base_url="http://127.0.0.1:9/v1", api_key_env="FAKE_KEY")
    with pytest.raises(MissingAPIKeyError, match="FAKE_KEY"):
        OpenAICompatProvider.from_settings("fake", settings)
    with pytest.raises(MissingAPIKeyError, match="FAKE_KEY"):
        ProviderRegistry({"fake": settings}).get("fake")


async def test_keyless_server_never_gets_the_openai_key(serve, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    server = serve({"a": ModelBehavior(text="ok", require_key=SECRET)})
    settings = ProviderSettings(base_url=server.base_url, requires_key=False)
    provider = OpenAICompatProvider.from_settings("local-server", settings)
    try:
        with pytest.raises(ProviderStatusError) as caught:
            await provider.complete(ask("a"))
    finally:
        await provider.aclose()
    assert caught.value.status_code == 401


async def test_wrong_key_is_401_not_retried_and_never_echoed(serve, providers) -> None:
    server = serve(default=ModelBehavior(text="ok", require_key="the-right-key"))
    provider = providers(server.base_url, api_key=SECRET, api_key_env="FAKE_KEY")
    with pytest.raises(ProviderStatusError) as caught:
        await provider.complete(ask("a"))
    error = caught.value
    assert error.status_code == 401 and not error.retryable
    assert "FAKE_KEY" in str(error) and SECRET not in str(error)

    with pytest.raises(AggregationError, match="401"):
        await mixture_over(provider, layers=[]).arun("hi")
    assert [r["model"] for r in server.requests].count("agg") == 1  # not retried


async def test_error_messages_redact_an_echoed_key(providers) -> None:
    provider = providers("http://127.0.0.1:9/v1", api_key=SECRET)
    assert provider._redact(f"invalid key {SECRET}") == "invalid key ***"


# -- failures and the engine's retries --------------------------------------------------


async def test_429_carries_retry_after(serve, providers) -> None:
    server = serve({"a": ModelBehavior(failures=[(429, 1.5)])})
    with pytest.raises(RateLimitError) as caught:
        await providers(server.base_url).complete(ask("a"))
    assert caught.value.retry_after == 1.5
    assert caught.value.retryable


async def test_engine_waits_retry_after_then_succeeds(serve, providers) -> None:
    server = serve(default=ModelBehavior(text="fine"))
    server.models["a"] = ModelBehavior(text="from a", failures=[(429, 0.4)])
    result = await mixture_over(providers(server.base_url)).arun("hi")
    agent_a = result.layers[0].agents[0]
    assert agent_a.ok and agent_a.output == "from a"
    assert agent_a.attempts == 2
    tries = [r for r in server.records if r.model == "a"]
    assert [r.status for r in tries] == [429, 200]
    # backoff_initial is 0: only Retry-After can explain the wait between the two tries.
    assert tries[1].started - tries[0].finished >= 0.38


async def test_500_then_success_is_retried(serve, providers) -> None:
    server = serve(default=ModelBehavior(text="fine"))
    server.models["b"] = ModelBehavior(text="from b", failures=[(500, None)])
    result = await mixture_over(providers(server.base_url)).arun("hi")
    agent_b = result.layers[0].agents[1]
    assert agent_b.ok and agent_b.attempts == 2
    assert result.output == "fine"


async def test_timeout(serve, providers) -> None:
    server = serve({"slow": ModelBehavior(latency=0.5)})
    provider = providers(server.base_url, timeout=0.1, api_key=SECRET)
    started = time.perf_counter()
    with pytest.raises(ProviderTimeoutError) as caught:
        await provider.complete(ask("slow"))
    assert time.perf_counter() - started < 0.45
    assert caught.value.retryable and SECRET not in str(caught.value)
    assert isinstance(caught.value.__cause__, Exception)


async def test_connection_refused(providers) -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    provider = providers(base_url, api_key=SECRET)
    with pytest.raises(ProviderConnectionError) as caught:
        await provider.complete(ask("a"))
    assert base_url in str(caught.value) and SECRET not in str(caught.value)
    assert caught.value.__cause__ is not None
    with pytest.raises(ProviderConnectionError):
        async for _ in provider.stream(ask("a")):
            pass


async def test_idle_connections_are_not_reused_after_the_keepalive(serve, providers) -> None:
    # Expiring before the server's own idle timeout is what keeps a busy pool from
    # sending calls down connections the server is closing (moa bench server).
    server = serve({"a": ModelBehavior()})
    provider = providers(server.base_url, keepalive=0.3)
    await provider.complete(ask("a"))
    await provider.complete(ask("a"))
    await asyncio.sleep(0.6)
    await provider.complete(ask("a"))
    ports = [record.client_port for record in server.records]
    assert ports[0] == ports[1] != ports[2]
    assert 0 not in ports
    assert OpenAICompatProvider("p", base_url=server.base_url).keepalive == DEFAULT_KEEPALIVE
    settings = ProviderSettings(base_url=server.base_url, requires_key=False, keepalive=1.5)
    assert OpenAICompatProvider.from_settings("p", settings).keepalive == 1.5


async def test_stream_errors_are_mapped_too(serve, providers) -> None:
    server = serve({"a": ModelBehavior(failures=[(503, None)])})
    with pytest.raises(ProviderStatusError) as caught:
        async for _ in providers(server.base_url).stream(ask("a")):
            pass
    assert caught.value.status_code == 503 and caught.value.retryable


def test_parse_retry_after() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    later = datetime.now(timezone.utc) + timedelta(seconds=30)
    assert 25 < (parse_retry_after(format_datetime(later, usegmt=True)) or 0) <= 30
    earlier = datetime.now(timezone.utc) - timedelta(seconds=30)
    assert parse_retry_after(format_datetime(earlier, usegmt=True)) == 0.0


# -- continuing a final assistant message -----------------------------------------------


async def test_continue_final_when_the_server_supports_it(serve, providers) -> None:
    server = serve({"a": ModelBehavior(text="The answer is 42.")})
    provider = providers(server.base_url, supports_continue=True)
    assert provider.supports_continue
    request = CompletionRequest(
        "a",
        (Message("user", "What is it?"), Message("assistant", "The answer")),
        continue_final=True,
    )
    text = "".join([c.text async for c in provider.stream(request)])
    assert text == " is 42."
    body = server.requests[0]
    assert body["continue_final_message"] is True
    assert body["add_generation_prompt"] is False


async def test_continue_final_refused_without_support(serve, providers) -> None:
    server = serve({"a": ModelBehavior(text="x")})
    provider = providers(server.base_url)
    assert not provider.supports_continue
    request = CompletionRequest(
        "a", (Message("user", "q"), Message("assistant", "The")), continue_final=True
    )
    with pytest.raises(FeatureUnavailableError, match=r"vLLM.*llama\.cpp"):
        await provider.complete(request)
    assert server.requests == []


def test_builtin_local_servers_declare_continue_support() -> None:
    vllm = OpenAICompatProvider.from_settings("vllm", BUILTIN_PROVIDERS["vllm"])
    ollama = OpenAICompatProvider.from_settings("ollama", BUILTIN_PROVIDERS["ollama"])
    assert vllm.supports_continue and not ollama.supports_continue


# -- event loops and configs -------------------------------------------------------------


def test_one_provider_serves_several_event_loops(serve) -> None:
    server = serve({"a": ModelBehavior(text="ok")})
    provider = OpenAICompatProvider("fake", base_url=server.base_url)

    async def once() -> str:
        return (await provider.complete(ask("a"))).text

    assert asyncio.run(once()) == "ok"
    assert asyncio.run(once()) == "ok"  # the first loop's client is gone with its loop

    async def close() -> None:
        await provider.aclose()

    asyncio.run(close())


def test_yaml_config_runs_end_to_end_twice(serve, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_KEY", SECRET)
    server = serve(default=ModelBehavior(text="forty-two", require_key=SECRET))
    config = tmp_path / "fake.yaml"
    config.write_text(
        f"""
providers:
  fake: {{base_url: "{server.base_url}", api_key_env: FAKE_KEY}}
layers:
  - [{{model: "fake:a"}}, {{model: "fake:b", temperature: 0.2}}, {{model: "fake:c"}}]
  - [{{model: "fake:a"}}, {{model: "fake:b"}}, {{model: "fake:c"}}]
aggregator: {{model: "fake:agg", max_tokens: 512}}
""",
        encoding="utf-8",
    )
    mixture = load_mixture(config)
    first = mixture.run("What is 2+2?")
    second = mixture.run("And 3+3?")  # a fresh event loop: the provider must not reuse a dead one
    for result in (first, second):
        assert result.output == "forty-two"
        assert all(agent.ok for layer in result.layers for agent in layer.agents)
        assert result.usage.calls == 7
    assert len(server.requests) == 14
    b_bodies = [r for r in server.requests if r["model"] == "b"]
    assert b_bodies[0]["temperature"] == 0.2
    aggregator = [r for r in server.requests if r["model"] == "agg"]
    assert aggregator[0]["max_tokens"] == 512 and aggregator[0]["stream"] is True
    # the aggregator saw both answers of the last layer as references
    assert aggregator[0]["messages"][0]["role"] == "system"
    assert aggregator[0]["messages"][0]["content"].count("forty-two") == 3
