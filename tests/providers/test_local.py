"""The local provider: scheduling with a stand-in model, then the real SmolLM2-135M (slow)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from local_helpers import StandIn, install

from moa.errors import ConfigError, FeatureUnavailableError, ModelNotInstalledError, ProviderError
from moa.providers.catalog import CATALOG, model_dir
from moa.providers.local import LocalProvider, default_parallel
from moa.providers.local_model import call_kwargs, import_llama
from moa.providers.settings import LocalSettings
from moa.types import CompletionChunk, CompletionRequest, GenerationParams, Message, Usage

QUESTION = (Message("user", "What is the capital of France?"),)


def request(model: str, messages: Sequence[Message] = QUESTION, **params: Any) -> CompletionRequest:
    return CompletionRequest(model, tuple(messages), GenerationParams(**params))


# --- scheduling, with a stand-in for llama.cpp ----------------------------------------------


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> StandIn:
    fake = StandIn()
    install(monkeypatch, fake)
    return fake


@pytest.fixture
def gguf(tmp_path: Path) -> list[str]:
    paths = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(b"GGUF")
        paths.append(str(path))
    return paths


async def collect(provider: LocalProvider, req: CompletionRequest) -> list[CompletionChunk]:
    return [chunk async for chunk in provider.stream(req)]


async def test_tokens_stream_while_the_event_loop_stays_free(
    stand_in: StandIn, gguf: list[str]
) -> None:
    stand_in.tokens, stand_in.token_s = 20, 0.01
    provider = LocalProvider(settings=LocalSettings(parallel=1))
    ticks = 0
    arrivals: list[float] = []

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.002)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    chunks = []
    async for chunk in provider.stream(request(gguf[0])):
        arrivals.append(time.perf_counter() - started)
        chunks.append(chunk)
    task.cancel()

    assert "".join(c.text for c in chunks) == "".join(f"t{n} " for n in range(20))
    assert ticks >= 20  # the loop kept running during the ~0.2 s of generation
    assert arrivals[0] < arrivals[-1] - 0.1  # the first token came long before the last
    assert chunks[-1].usage == Usage(7, 20, 1)
    assert chunks[-1].finish_reason == "length"


@pytest.mark.parametrize("parallel", [1, 2])
async def test_the_cpu_gate_bounds_generations_across_models(
    stand_in: StandIn, gguf: list[str], parallel: int
) -> None:
    provider = LocalProvider(settings=LocalSettings(parallel=parallel, threads=1))
    await asyncio.gather(*(collect(provider, request(path)) for path in gguf * 2))
    assert stand_in.max_total == parallel
    assert stand_in.max_per_model == 1


async def test_one_model_serves_one_generation_at_a_time(
    stand_in: StandIn, gguf: list[str]
) -> None:
    provider = LocalProvider(settings=LocalSettings(parallel=4))
    results = await asyncio.gather(*(collect(provider, request(gguf[0])) for _ in range(3)))
    assert stand_in.max_per_model == 1
    assert all(chunks[-1].usage == Usage(7, 10, 1) for chunks in results)


async def test_calls_for_a_model_are_served_in_the_order_they_came(
    stand_in: StandIn, gguf: list[str]
) -> None:
    provider = LocalProvider()
    finished: list[int] = []

    async def call(index: int) -> None:
        await collect(provider, request(gguf[0]))
        finished.append(index)

    calls = []
    for index in range(8):
        calls.append(asyncio.create_task(call(index)))
        await asyncio.sleep(0.03)  # in line for the model before the next one comes
    await asyncio.gather(*calls)
    assert finished == list(range(8))


async def test_cancelling_the_consumer_stops_the_generation_and_frees_the_gate(
    stand_in: StandIn, gguf: list[str]
) -> None:
    stand_in.tokens, stand_in.token_s = 10_000, 0.005
    provider = LocalProvider(settings=LocalSettings(parallel=1))
    received = 0

    async def consume() -> None:
        nonlocal received
        async for chunk in provider.stream(request(gguf[0])):
            received += bool(chunk.text)

    task = asyncio.create_task(consume())
    while received < 3:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert stand_in.stopped.is_set()  # the worker has left the generation already
    assert stand_in.produced < 20
    assert provider._gate.acquire(give_up=lambda: True)  # free now
    provider._gate.release()
    stand_in.tokens = 3
    chunks = await asyncio.wait_for(collect(provider, request(gguf[1])), 5)
    assert chunks[-1].finish_reason is not None


async def test_a_generation_waiting_for_the_gate_can_be_cancelled(
    stand_in: StandIn, gguf: list[str]
) -> None:
    stand_in.tokens, stand_in.token_s = 40, 0.01
    provider = LocalProvider(settings=LocalSettings(parallel=1))
    first = asyncio.create_task(collect(provider, request(gguf[0])))
    await asyncio.sleep(0.05)
    waiting = asyncio.create_task(collect(provider, request(gguf[1])))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert len(await first) == 41
    assert stand_in.running.get(gguf[1], 0) == 0


async def test_a_failure_in_the_model_is_a_provider_error(
    stand_in: StandIn, gguf: list[str]
) -> None:
    stand_in.error = RuntimeError("llama fell over")
    provider = LocalProvider()
    with pytest.raises(ProviderError, match="llama fell over") as caught:
        await provider.complete(request(gguf[0]))
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert caught.value.provider == "local"


async def test_complete_gathers_the_stream(stand_in: StandIn, gguf: list[str]) -> None:
    stand_in.tokens = 3
    completion = await LocalProvider().complete(request(gguf[0]))
    assert completion.text == "t0 t1 t2 "
    assert completion.usage == Usage(7, 3, 1)
    assert completion.finish_reason == "length"


# --- model ids, parameters, settings ----------------------------------------------------------


def test_a_catalog_model_that_is_not_pulled_names_the_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MOA_MODEL_DIR", str(tmp_path))
    with pytest.raises(ModelNotInstalledError, match=r"moa models pull qwen2\.5-coder-0\.5b"):
        LocalProvider().model_path("qwen2.5-coder-0.5b")


def test_model_ids_are_catalog_names_or_gguf_paths(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "mine.gguf").write_bytes(b"GGUF")
    provider = LocalProvider()

    assert provider.model_path("~/mine.gguf") == ((tmp_path / "mine.gguf").resolve(), None)
    assert provider.model_path(str(tmp_path / "mine.gguf"))[1] is None
    with pytest.raises(ConfigError, match="does not exist"):
        provider.model_path(str(tmp_path / "absent.gguf"))
    with pytest.raises(ConfigError, match="smollm2-135m"):
        provider.model_path("llama-9000")


async def test_missing_model_fails_the_call_before_any_thread_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("llama_cpp")
    monkeypatch.setenv("MOA_MODEL_DIR", str(tmp_path))
    with pytest.raises(ModelNotInstalledError):
        await LocalProvider().complete(request("smollm2-135m"))


def test_extra_parameters_are_checked() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    params = GenerationParams(
        temperature=0.3, max_tokens=9, stop=("\n",), seed=4, extra={"repeat_penalty": 1.2}
    )
    kwargs = call_kwargs(llama_cpp.Llama, params, continue_final=False)
    assert kwargs == {
        "temperature": 0.3,
        "max_tokens": 9,
        "stop": ["\n"],
        "seed": 4,
        "repeat_penalty": 1.2,
    }
    with pytest.raises(ConfigError, match=r"'bogus'.*repeat_penalty"):
        call_kwargs(llama_cpp.Llama, GenerationParams(extra={"bogus": 1}), continue_final=False)
    with pytest.raises(ConfigError, match="temperature field"):
        call_kwargs(
            llama_cpp.Llama, GenerationParams(extra={"temperature": 1}), continue_final=False
        )
    with pytest.raises(FeatureUnavailableError, match="response_format"):
        call_kwargs(
            llama_cpp.Llama,
            GenerationParams(extra={"response_format": {"type": "json_object"}}),
            continue_final=True,
        )


def test_continuing_samples_with_the_chat_defaults() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    kwargs = call_kwargs(llama_cpp.Llama, GenerationParams(), continue_final=True)
    # create_completion would otherwise stop after 16 tokens at temperature 0.8
    assert kwargs["max_tokens"] is None
    assert kwargs["temperature"] == 0.2


def test_without_llama_cpp_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(ConfigError, match=r"pip install 'mixture-of-agents\[local\]'"):
        import_llama()


@pytest.mark.parametrize(
    ("cores", "parallel", "threads"), [(1, 1, 1), (2, 1, 2), (4, 1, 4), (8, 2, 4), (16, 4, 4)]
)
def test_cores_are_divided_between_parallel_generations(
    monkeypatch: pytest.MonkeyPatch, cores: int, parallel: int, threads: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    provider = LocalProvider()
    assert default_parallel(cores) == parallel
    assert (provider.parallel, provider.threads) == (parallel, threads)
    assert provider.max_concurrency == parallel
    assert provider.concurrency_key(request("a")) == provider.concurrency_key(request("b"))
    configured = LocalProvider(settings=LocalSettings(parallel=3, threads=5))
    assert (configured.parallel, configured.threads) == (3, 5)


# --- the real SmolLM2-135M -----------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2() -> Iterator[LocalProvider]:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    path = model_dir() / CATALOG["smollm2-135m"].filename
    if not path.is_file():
        pytest.skip(f"SmolLM2-135M is not at {path}; run: moa models pull smollm2-135m")
    provider = LocalProvider(settings=LocalSettings(n_ctx=2048))
    yield provider
    asyncio.run(provider.unload())


@pytest.mark.slow
async def test_real_complete(smollm2: LocalProvider) -> None:
    completion = await smollm2.complete(request("smollm2-135m", max_tokens=24, temperature=0.2))
    assert completion.text.strip()
    assert completion.usage.prompt_tokens > 10
    assert 0 < completion.usage.completion_tokens <= 24
    assert completion.usage.calls == 1
    assert completion.finish_reason in ("stop", "length")


@pytest.mark.slow
async def test_real_stream_yields_tokens_as_they_come(smollm2: LocalProvider) -> None:
    story = (Message("user", "Write a long story about a lighthouse keeper."),)
    chunks = await collect(smollm2, request("smollm2-135m", story, max_tokens=32, seed=3))
    texts = [c.text for c in chunks if c.text]
    assert len(texts) >= 10
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 32
    assert chunks[-1].finish_reason == "length"


@pytest.mark.slow
async def test_real_max_tokens_is_respected(smollm2: LocalProvider) -> None:
    story = (Message("user", "Write a long story about a lighthouse keeper."),)
    completion = await smollm2.complete(request("smollm2-135m", story, max_tokens=5))
    assert completion.usage.completion_tokens == 5
    assert completion.finish_reason == "length"
    assert len(completion.text.split()) <= 5


@pytest.mark.slow
async def test_real_continue_final_goes_on_from_the_partial_answer(
    smollm2: LocalProvider,
) -> None:
    messages = (
        Message("user", "Count from 1 to 10, separated by commas."),
        Message("assistant", "1, 2, 3, 4,"),
    )
    req = CompletionRequest(
        "smollm2-135m", messages, GenerationParams(max_tokens=12, temperature=0.0), True
    )
    completion = await smollm2.complete(req)
    assert completion.text.lstrip().startswith("5")
    assert "1, 2, 3" not in completion.text


@pytest.mark.slow
async def test_real_cancellation_stops_early(smollm2: LocalProvider) -> None:
    story = (Message("user", "Write a very long story about a dragon."),)
    received = 0

    async def consume() -> None:
        nonlocal received
        async for chunk in smollm2.stream(request("smollm2-135m", story, max_tokens=1000)):
            received += bool(chunk.text)

    task = asyncio.create_task(consume())
    while received < 3:
        await asyncio.sleep(0.005)
    started = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert time.perf_counter() - started < 2.0
    assert received < 100
    assert smollm2._gate.acquire(give_up=lambda: True)  # free now
    smollm2._gate.release()
    after = await smollm2.complete(request("smollm2-135m", max_tokens=4))
    assert after.usage.completion_tokens <= 4


@pytest.mark.slow
async def test_models_stay_loaded_across_aclose(smollm2: LocalProvider) -> None:
    await smollm2.complete(request("smollm2-135m", max_tokens=4, temperature=0.0))
    loaded = dict(smollm2._models)
    await smollm2.aclose()  # what the sync facade does after every call
    await smollm2.complete(request("smollm2-135m", max_tokens=4, temperature=0.0))
    assert loaded and smollm2._models == loaded
