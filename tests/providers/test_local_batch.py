"""Batched decoding of local calls: grouping with a stand-in model, then SmolLM2-135M (slow)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from local_helpers import StandIn, install

from moa.engine.mixture import Mixture
from moa.engine.spec import MixtureSpec
from moa.errors import ProviderError
from moa.providers.catalog import CATALOG, model_dir
from moa.providers.local import LocalProvider
from moa.providers.local_model import Done, Emit, Generation, LocalModel
from moa.providers.registry import ProviderRegistry
from moa.providers.settings import LocalSettings
from moa.types import CompletionRequest, GenerationParams, Message

QUESTION = (Message("user", "Name three colors."),)


def request(
    model: str,
    messages: Sequence[Message] = QUESTION,
    *,
    continue_final: bool = False,
    **params: Any,
) -> CompletionRequest:
    return CompletionRequest(
        model, tuple(messages), GenerationParams(**params), continue_final=continue_final
    )


class Recorder(StandIn):
    """A stand-in that also decodes batches; records which calls went together."""

    def __init__(self) -> None:
        super().__init__(tokens=1)
        self.groups: list[int] = []
        self.batch_result = "ok"  # "ok", "none" (cannot batch) or "fail"
        self.step_s = 0.01

    @property
    def alone(self) -> int:
        return self.produced  # one token per call that went alone

    def generate_batch(
        self,
        model: LocalModel,
        calls: Sequence[tuple[Generation, Sequence[Message], Mapping[str, Any], Emit, Done]],
        *,
        n_seq: int,
    ) -> bool:
        assert len(calls) <= n_seq
        if self.batch_result == "none":
            return False
        if self.batch_result == "fail":
            raise RuntimeError("decode failed")
        with self.lock:
            self.groups.append(len(calls))
        for step in range(5):
            time.sleep(self.step_s)
            for run, _, kwargs, emit, _ in calls:
                if not run.cancelled.is_set():
                    emit(f"s{kwargs.get('seed')}.{step} ")
        for run, *_, done in calls:
            run.prompt_tokens, run.completion_tokens = 5, 5
            done("length")
        return True


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    fake = Recorder()
    install(monkeypatch, fake)
    return fake


@pytest.fixture
def gguf(tmp_path: Path) -> str:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")
    return str(path)


def samples(model: str, seeds: Sequence[int]) -> list[CompletionRequest]:
    return [request(model, temperature=0.7, seed=s, max_tokens=16) for s in seeds]


async def test_calls_waiting_together_share_one_batch(recorder: Recorder, gguf: str) -> None:
    provider = LocalProvider(settings=LocalSettings(batch=4))
    answers = await asyncio.gather(*(provider.complete(r) for r in samples(gguf, [1, 2, 3, 4])))
    assert recorder.groups == [4] and recorder.alone == 0
    for seed, answer in zip([1, 2, 3, 4], answers, strict=True):
        assert answer.text == "".join(f"s{seed}.{step} " for step in range(5))
        assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (5, 5)
        assert answer.usage.calls == 1 and answer.finish_reason == "length"


async def test_a_mixture_s_samples_reach_the_model_together(recorder: Recorder, gguf: str) -> None:
    # The engine lets as many calls through to the provider as a batch can take.
    provider = LocalProvider(settings=LocalSettings(batch=4))
    agents = [{"model": f"local:{gguf}", "temperature": 0.7, "seed": s} for s in (1, 2, 3, 4)]
    spec = MixtureSpec.model_validate(
        {"layers": [agents], "aggregator": {"model": f"local:{gguf}"}}
    )
    result = await Mixture(spec, ProviderRegistry().add("local", provider)).arun("Hi")
    assert recorder.groups == [4] and recorder.alone == 1  # the aggregator came alone
    assert result.output == "t0 "


async def test_a_batch_takes_at_most_batch_calls(recorder: Recorder, gguf: str) -> None:
    provider = LocalProvider(settings=LocalSettings(batch=2))
    answers = await asyncio.gather(*(provider.complete(r) for r in samples(gguf, [1, 2, 3, 4])))
    assert sorted(recorder.groups) == [2, 2]
    assert all(a.text.startswith(f"s{s}.0") for s, a in zip([1, 2, 3, 4], answers, strict=True))


async def test_batching_is_off_by_default(recorder: Recorder, gguf: str) -> None:
    provider = LocalProvider()
    await asyncio.gather(*(provider.complete(r) for r in samples(gguf, [1, 2, 3])))
    assert recorder.groups == [] and recorder.alone == 3


async def test_a_call_that_cannot_share_goes_alone(recorder: Recorder, gguf: str) -> None:
    provider = LocalProvider(settings=LocalSettings(batch=4))
    partial = (*QUESTION, Message("assistant", "Red,"))
    going_on = request(gguf, partial, continue_final=True, max_tokens=8)
    answers = await asyncio.gather(
        provider.complete(going_on), *(provider.complete(r) for r in samples(gguf, [1, 2]))
    )
    assert recorder.alone == 1 and recorder.groups == [2]
    assert answers[0].text == "t0 "


async def test_calls_go_one_by_one_when_the_batch_cannot_hold_them(
    recorder: Recorder, gguf: str
) -> None:
    recorder.batch_result = "none"
    provider = LocalProvider(settings=LocalSettings(batch=4))
    answers = await asyncio.gather(*(provider.complete(r) for r in samples(gguf, [1, 2, 3])))
    assert recorder.alone == 3 and [a.text for a in answers] == ["t0 "] * 3


async def test_a_failed_batch_fails_every_call_in_it(recorder: Recorder, gguf: str) -> None:
    recorder.batch_result = "fail"
    provider = LocalProvider(settings=LocalSettings(batch=4))
    results = await asyncio.gather(
        *(provider.complete(r) for r in samples(gguf, [1, 2, 3])), return_exceptions=True
    )
    assert all(isinstance(r, ProviderError) and "decode failed" in str(r) for r in results)


async def test_cancelling_one_call_of_a_batch_leaves_the_others(
    recorder: Recorder, gguf: str
) -> None:
    recorder.step_s = 0.05
    provider = LocalProvider(settings=LocalSettings(batch=4))
    tasks = [asyncio.create_task(provider.complete(r)) for r in samples(gguf, [1, 2, 3])]
    await asyncio.sleep(0.1)
    tasks[1].cancel()
    done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=10)
    assert isinstance(done[1], asyncio.CancelledError)
    assert [d.text.count("s") for d in done if not isinstance(d, BaseException)] == [5, 5]
    assert recorder.groups == [3]


# --- the real SmolLM2-135M -----------------------------------------------------------------


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[LocalProvider, LocalProvider]]:
    """The same model through a batching provider and a one-at-a-time one."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    path = model_dir() / CATALOG["smollm2-135m"].filename
    if not path.is_file():
        pytest.skip(f"SmolLM2-135M is not at {path}; run: moa models pull smollm2-135m")
    batching = LocalProvider(settings=LocalSettings(n_ctx=2048, batch=4))
    alone = LocalProvider(settings=LocalSettings(n_ctx=2048))
    yield batching, alone
    for provider in (batching, alone):
        asyncio.run(provider.unload())


@pytest.mark.slow
async def test_real_batch_answers_each_call_with_its_own_settings(
    pair: tuple[LocalProvider, LocalProvider],
) -> None:
    batching, alone = pair
    greedy = request("smollm2-135m", temperature=0.0, max_tokens=24)
    count = request("smollm2-135m", (Message("user", "Count from one to ten."),), max_tokens=6)
    one_line = request("smollm2-135m", temperature=0.0, max_tokens=40, stop=["\n"])
    answers = await asyncio.gather(
        *(batching.complete(r) for r in (greedy, greedy, count, one_line))
    )
    # Both copies of the shared prompt answer it (a batch's numbers may differ in the last
    # bits between rows, so the two greedy texts are not compared letter for letter).
    for answer in answers[:2]:
        assert any(color in answer.text.lower() for color in ("red", "blue", "green", "yellow"))
    assert answers[2].usage.completion_tokens == 6 and answers[2].finish_reason == "length"
    assert "\n" not in answers[3].text and answers[3].finish_reason == "stop"
    # The chat template renders the prompt exactly as a call alone does.
    single = await alone.complete(greedy)
    assert answers[0].usage.prompt_tokens == single.usage.prompt_tokens
    assert all(a.usage.calls == 1 for a in answers)


@pytest.mark.slow
async def test_real_batched_samples_are_whole_answers(
    pair: tuple[LocalProvider, LocalProvider],
) -> None:
    # Sampling in a batch is not bit-for-bit that of a call alone (nor of another batch):
    # the same seed gives an answer from the same distribution, not the same text.
    batching, _ = pair
    story = (Message("user", "Tell me a short story about a cat."),)
    sampled = [
        request("smollm2-135m", story, temperature=0.9, seed=s, max_tokens=24) for s in (1, 2, 3)
    ]
    answers = await asyncio.gather(*(batching.complete(r) for r in sampled))
    for answer in answers:
        assert answer.text.strip() and answer.finish_reason in ("stop", "length")
        assert 0 < answer.usage.completion_tokens <= 24


@pytest.mark.slow
async def test_real_a_call_ends_as_soon_as_its_own_answer_does(
    pair: tuple[LocalProvider, LocalProvider],
) -> None:
    batching, _ = pair
    story = (Message("user", "Write a long story about a lighthouse keeper."),)
    short = asyncio.create_task(batching.complete(request("smollm2-135m", story, max_tokens=3)))
    long = asyncio.create_task(
        batching.complete(request("smollm2-135m", story, max_tokens=300, temperature=0.0))
    )
    answer = await short
    assert answer.usage.completion_tokens == 3
    assert not long.done()  # the short one did not wait for the batch to finish
    await long
    # Cancelling one call of a running batch returns at once; the other goes on.
    going_on = asyncio.create_task(
        batching.complete(request("smollm2-135m", story, max_tokens=300, temperature=0.0))
    )
    cancelled = asyncio.create_task(
        batching.complete(request("smollm2-135m", story, max_tokens=300, seed=5))
    )
    await asyncio.sleep(0.3)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(cancelled, timeout=5)
    assert not going_on.done()
    assert (await going_on).usage.completion_tokens > 0
