"""Batched decoding of local calls: grouping with a stand-in model, then SmolLM2-135M (slow)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from local_helpers import StandIn, install

from moa.engine.mixture import Mixture
from moa.engine.spec import MixtureSpec
from moa.errors import ProviderError
from moa.providers.catalog import CATALOG, model_dir
from moa.providers.local import LocalProvider
from moa.providers.local_batch import BatchStats, _runs
from moa.providers.local_model import Entry, LocalModel, MoreEntries
from moa.providers.registry import ProviderRegistry
from moa.providers.settings import LocalSettings
from moa.types import Completion, CompletionRequest, GenerationParams, Message

QUESTION = (Message("user", "Name three colors."),)
STORY = (Message("user", "Write a long story about a lighthouse keeper."),)


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
    """A stand-in that also decodes batches, one step of each row at a time.

    A call takes ``steps`` steps (by seed, else 5); rows freed between steps go
    to calls the provider's ``more`` hands over. Records each batch's rows at
    the start, the calls that joined later, and the most rows at once.
    """

    def __init__(self) -> None:
        super().__init__(tokens=1)
        self.groups: list[int] = []
        self.joined_later: list[int | None] = []  # their seeds
        self.most_rows = 0
        self.batch_result = "ok"  # "ok", "none" (cannot batch) or "fail"
        self.step_s = 0.01
        self.steps: dict[int | None, int] = {}
        self.refuse: set[int | None] = set()  # seeds that do not fit the batch's room

    @property
    def alone(self) -> int:
        return self.produced  # one token per call that went alone

    def generate_batch(
        self,
        model: LocalModel,
        calls: Sequence[Entry],
        *,
        n_seq: int,
        more: MoreEntries | None = None,
    ) -> bool:
        assert len(calls) <= n_seq
        if self.batch_result == "none":
            return False
        if self.batch_result == "fail":
            raise RuntimeError("decode failed")
        rows: list[tuple[Entry, list[int]]] = [(entry, [0]) for entry in calls]  # steps done

        def admit() -> list[Entry]:
            if more is None or len(rows) == n_seq:
                return []
            joining = more(n_seq - len(rows), lambda e: e[2].get("seed") not in self.refuse)
            rows.extend((entry, [0]) for entry in joining)
            return joining

        admit()
        with self.lock:
            self.groups.append(len(rows))
        while rows:
            time.sleep(self.step_s)
            self.most_rows = max(self.most_rows, len(rows))
            for row in list(rows):
                (run, _, kwargs, emit, done), done_steps = row
                seed = kwargs.get("seed")
                if not run.cancelled.is_set():
                    emit(f"s{seed}.{done_steps[0]} ")
                done_steps[0] += 1
                if run.cancelled.is_set() or done_steps[0] == self.steps.get(seed, 5):
                    run.prompt_tokens, run.completion_tokens = 5, done_steps[0]
                    rows.remove(row)
                    done("length")
            self.joined_later += [entry[2].get("seed") for entry in admit()]
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


@pytest.fixture
def other(tmp_path: Path) -> str:
    """A second model file."""
    path = tmp_path / "other.gguf"
    path.write_bytes(b"GGUF")
    return str(path)


def samples(model: str, seeds: Sequence[int]) -> list[CompletionRequest]:
    return [request(model, temperature=0.7, seed=s, max_tokens=16) for s in seeds]


def test_batch_stats_subtract_and_describe_themselves() -> None:
    total = BatchStats(5, 900, 3.0, steps=40, row_steps=120, step_s=4.0, passes=45, wall_s=8.0)
    earlier = BatchStats(1, 300, 1.0, steps=10, row_steps=20, passes=10, wall_s=2)
    since = total - earlier
    assert (since.calls, since.prompt_tokens, since.steps, since.row_steps) == (4, 600, 30, 100)
    assert since.describe() == (
        "4 calls in 6s; 600 prompt tokens in 2.0s (300/s); "
        "30 steps of 3.3 rows (1.2 passes) in 4.0s (25.0 tokens/s); 0.0s besides"
    )
    assert [_runs(ids) for ids in ([0, 1, 2, 5, 6], [3], [0, 2, 4], [])] == [2, 1, 3, 0]
    assert BatchStats().describe().startswith("0 calls in 0s; 0 prompt tokens in 0.0s (0/s)")


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
    # The aggregator came after them: in a batch of its own, or into the ending one.
    assert recorder.groups[0] == 4 and recorder.alone == 0
    assert sum(recorder.groups[1:]) + len(recorder.joined_later) == 1
    assert result.output == "".join(f"sNone.{step} " for step in range(5))


async def test_two_models_called_together_each_fill_their_own_batch(
    recorder: Recorder, gguf: str, other: str
) -> None:
    # The engine's limit counts each model's calls apart: four of each reach the provider,
    # and the batch of the model that goes first takes its four while the other's wait.
    provider = LocalProvider(settings=LocalSettings(batch=4))
    agents = [
        {"model": f"local:{path}", "temperature": 0.7, "seed": seed}
        for seed in (1, 2, 3, 4)
        for path in (gguf, other)  # interleaved, as a layer of mixed agents asks
    ]
    spec = MixtureSpec.model_validate(
        {"layers": [agents], "aggregator": {"model": f"local:{gguf}"}}
    )
    await Mixture(spec, ProviderRegistry().add("local", provider)).arun("Hi")
    # Each model's four were in its batch at once (some may have joined it after its start).
    assert recorder.most_rows == 4 and recorder.alone == 0
    assert sum(recorder.groups) + len(recorder.joined_later) == 9  # with the aggregator
    assert provider.max_concurrency == 4
    assert provider.concurrency_key(request(gguf)) != provider.concurrency_key(request("x"))


async def test_a_batch_takes_at_most_batch_calls(recorder: Recorder, gguf: str) -> None:
    provider = LocalProvider(settings=LocalSettings(batch=2))
    answers = await asyncio.gather(*(provider.complete(r) for r in samples(gguf, [1, 2, 3, 4])))
    assert recorder.most_rows == 2 and recorder.groups == [2]
    assert recorder.joined_later in ([3, 4], [4, 3])  # into the rows the first two left
    for seed, answer in zip([1, 2, 3, 4], answers, strict=True):
        assert answer.text == "".join(f"s{seed}.{step} " for step in range(5))


async def test_a_call_takes_the_first_row_that_frees_up(recorder: Recorder, gguf: str) -> None:
    recorder.steps = {1: 2, 2: 30, 3: 2}
    provider = LocalProvider(settings=LocalSettings(batch=2))
    first = [asyncio.create_task(provider.complete(r)) for r in samples(gguf, [1, 2])]
    await asyncio.sleep(0.05)  # both are in the batch; call 1 is over, call 2 goes on
    late = await provider.complete(samples(gguf, [3])[0])
    assert late.text == "s3.0 s3.1 " and late.usage.completion_tokens == 2
    assert not first[1].done()  # it joined the running batch instead of waiting for it
    await asyncio.gather(*first)
    assert recorder.groups == [2] and recorder.joined_later == [3]


async def test_a_call_that_does_not_fit_stops_others_from_overtaking_it(
    recorder: Recorder, gguf: str
) -> None:
    # First come first in: while the call that has no room waits, the one behind it does not
    # join the running batch either; both go once the batch is over.
    recorder.steps, recorder.refuse = {1: 20}, {2}
    provider = LocalProvider(settings=LocalSettings(batch=3))
    running = asyncio.create_task(provider.complete(samples(gguf, [1])[0]))
    await asyncio.sleep(0.06)
    rest = await asyncio.gather(*(provider.complete(r) for r in samples(gguf, [2, 3])))
    await running
    assert recorder.joined_later == [] and recorder.groups[0] == 1
    assert [a.usage.completion_tokens for a in rest] == [5, 5]


@pytest.mark.parametrize(
    ("handover_s", "joined_later", "groups"), [(0.03, [], [1, 1, 1]), (5.0, [2], [1, 1])]
)
async def test_a_batch_takes_its_model_s_calls_until_another_model_s_has_waited_handover_s(
    recorder: Recorder,
    gguf: str,
    other: str,
    handover_s: float,
    joined_later: list[int],
    groups: list[int],
) -> None:
    recorder.steps = {1: 40}
    provider = LocalProvider(settings=LocalSettings(batch=4, handover_s=handover_s))
    long = asyncio.create_task(provider.complete(samples(gguf, [1])[0]))
    await asyncio.sleep(0.06)
    elsewhere = asyncio.create_task(provider.complete(samples(other, [7])[0]))
    await asyncio.sleep(0.06)
    # The other model's call has waited 0.06 s. Past handover_s, the batch takes no more
    # calls: this sample waits for the batch to drain, and goes after the other model. Within
    # it, the sample joins the running batch, and the other model goes once that has drained.
    after = asyncio.create_task(provider.complete(samples(gguf, [2])[0]))
    await after
    assert elsewhere.done() == (handover_s < 0.06)
    await asyncio.gather(long, elsewhere)
    assert recorder.joined_later == joined_later and recorder.groups == groups


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


async def batched(
    provider: LocalProvider, requests: Sequence[CompletionRequest]
) -> tuple[list[Completion], BatchStats]:
    """Answers to ``requests`` sent together, and what SmolLM2's batch context did meanwhile."""
    model = provider._model("smollm2-135m")
    before = replace(model._batch.stats) if model._batch is not None else BatchStats()
    answers = await asyncio.gather(*(provider.complete(r) for r in requests))
    for _ in range(100):  # the batch's last accounting comes just after its last call returns
        if model._batch is not None and model._batch.stats.wall_s > before.wall_s:
            break
        await asyncio.sleep(0.05)
    assert model._batch is not None
    return answers, model._batch.stats - before


@pytest.mark.slow
async def test_real_batch_answers_each_call_with_its_own_settings(
    pair: tuple[LocalProvider, LocalProvider],
) -> None:
    batching, alone = pair
    greedy = request("smollm2-135m", temperature=0.0, max_tokens=24)
    # Sampled at the default temperature, seeded so that the run repeats; three tokens are
    # fewer than any answer to it (an unseeded draw once ended "One to ten." in four).
    count = request(
        "smollm2-135m", (Message("user", "Count from one to ten."),), max_tokens=3, seed=7
    )
    one_line = request("smollm2-135m", temperature=0.0, max_tokens=40, stop=["\n"])
    answers, done = await batched(batching, (greedy, greedy, count, one_line))
    # The shared prompt's owner took a lower id than its copy: the step that decoded the new
    # prompts' last tokens (none for the copy) was over consecutive ids, one pass.
    assert done.calls == 4 and done.passes == done.steps
    # Both copies of the shared prompt answer it (a batch's numbers may differ in the last
    # bits between rows, so the two greedy texts are not compared letter for letter).
    for answer in answers[:2]:
        assert any(color in answer.text.lower() for color in ("red", "blue", "green", "yellow"))
    assert answers[2].usage.completion_tokens == 3 and answers[2].finish_reason == "length"
    assert "\n" not in answers[3].text and answers[3].finish_reason == "stop"
    # The chat template renders the prompt exactly as a call alone does.
    single = await alone.complete(greedy)
    assert answers[0].usage.prompt_tokens == single.usage.prompt_tokens
    assert all(a.usage.calls == 1 for a in answers)


@pytest.mark.slow
async def test_real_batched_samples_are_whole_answers(
    pair: tuple[LocalProvider, LocalProvider], caplog: pytest.LogCaptureFixture
) -> None:
    # Sampling in a batch is not bit-for-bit that of a call alone (nor of another batch):
    # the same seed gives an answer from the same distribution, not the same text.
    batching, _ = pair
    story = (Message("user", "Tell me a short story about a cat."),)
    sampled = [
        request("smollm2-135m", story, temperature=0.9, seed=s, max_tokens=24) for s in (1, 2, 3)
    ]
    with caplog.at_level(logging.DEBUG, logger="moa.providers.local_batch"):
        answers, stats = await batched(batching, sampled)
        # The batch logs as it ends, on its thread, just after its last call has returned.
        for _ in range(100):
            if any("(ended after" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.05)
    for answer in answers:
        assert answer.text.strip() and answer.finish_reason in ("stop", "length")
        assert 0 < answer.usage.completion_tokens <= 24
    # The three rows shared one evaluation of their prompt; each step decoded a token of
    # every row (a row's last token, sampled after its last step, is not decoded).
    generated = sum(a.usage.completion_tokens for a in answers)
    assert stats.calls == 3 and stats.prompt_tokens == answers[0].usage.prompt_tokens
    assert generated - 3 <= stats.row_steps and stats.steps <= stats.row_steps
    assert stats.passes == stats.steps  # the rows' ids follow one another in every step
    assert any("batch of smollm2-135m (ended after" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
async def test_real_a_call_ends_as_soon_as_its_own_answer_does(
    pair: tuple[LocalProvider, LocalProvider],
) -> None:
    batching, _ = pair
    short = asyncio.create_task(batching.complete(request("smollm2-135m", STORY, max_tokens=3)))
    long = asyncio.create_task(
        batching.complete(request("smollm2-135m", STORY, max_tokens=300, temperature=0.0))
    )
    answer = await short
    assert answer.usage.completion_tokens == 3
    assert not long.done()  # the short one did not wait for the batch to finish
    await long
    # Cancelling one call of a running batch returns at once; the other goes on.
    going_on = asyncio.create_task(
        batching.complete(request("smollm2-135m", STORY, max_tokens=300, temperature=0.0))
    )
    cancelled = asyncio.create_task(
        batching.complete(request("smollm2-135m", STORY, max_tokens=300, seed=5))
    )
    await asyncio.sleep(0.3)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(cancelled, timeout=5)
    assert not going_on.done()
    assert (await going_on).usage.completion_tokens > 0


async def running(provider: LocalProvider, *, max_tokens: int) -> asyncio.Task[Completion]:
    """A long greedy story, given half a second to get going."""
    task = asyncio.create_task(
        provider.complete(request("smollm2-135m", STORY, max_tokens=max_tokens, temperature=0.0))
    )
    await asyncio.sleep(0.5)
    return task


@pytest.mark.slow
async def test_real_a_row_that_leaves_makes_room_for_the_last_one(
    pair: tuple[LocalProvider, LocalProvider],
) -> None:
    # Rows 0, 1, 2: row 1 ends first, row 2 moves into its cells, so every later step is
    # over rows 0 and 1, one pass over the weights; row 2's story goes on from its own cells.
    batching, _ = pair
    story = request("smollm2-135m", STORY, max_tokens=60, temperature=0.0)
    short = request("smollm2-135m", max_tokens=4, temperature=0.0)
    answers, done = await batched(batching, (story, short, story))
    assert done.calls == 3 and done.passes == done.steps
    assert answers[1].usage.completion_tokens == 4
    for answer in (answers[0], answers[2]):
        assert answer.usage.completion_tokens == 60 and "lighthouse" in answer.text.lower()


@pytest.mark.slow
async def test_real_a_call_joins_a_running_batch_when_it_fits(
    pair: tuple[LocalProvider, LocalProvider],
) -> None:
    batching, _ = pair
    long = await running(batching, max_tokens=250)
    joined = await batching.complete(request("smollm2-135m", temperature=0.0, max_tokens=24))
    assert any(color in joined.text.lower() for color in ("red", "blue", "green", "yellow"))
    assert not long.done()  # it was answered inside the running batch
    assert (await long).usage.completion_tokens > 24


@pytest.mark.slow
async def test_real_a_call_without_room_waits_for_the_batch() -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    if not (model_dir() / CATALOG["smollm2-135m"].filename).is_file():
        pytest.skip("SmolLM2-135M is not installed; run: moa models pull smollm2-135m")
    small = LocalProvider(settings=LocalSettings(n_ctx=512, batch=2))  # rows of 512 cells
    try:
        long = await running(small, max_tokens=400)
        # A row is free, but its prompt and 500 tokens do not fit one: it waits, then goes alone.
        late = await small.complete(request("smollm2-135m", temperature=0.0, max_tokens=500))
        assert long.done() and late.text.strip()
        # A call that fits a row joins the running batch instead.
        long = await running(small, max_tokens=400)
        joined = await small.complete(request("smollm2-135m", temperature=0.0, max_tokens=100))
        assert not long.done() and joined.text.strip()
        await long
    finally:
        await small.unload()
