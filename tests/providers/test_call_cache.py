"""The persistent call cache: a repeated call is answered without calling the provider."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from moa import Mixture, MixtureSpec
from moa.providers.cache import (
    CachedProvider,
    CachingRegistry,
    SQLiteCallStore,
    cache_key,
    recording_calls,
    recording_hits,
)
from moa.testing import FakeProvider
from moa.types import CompletionRequest, GenerationParams, Message, Usage

SPEC = MixtureSpec.model_validate(
    {
        "layers": [[{"model": "fake:a", "seed": 1}, {"model": "fake:b", "temperature": 0.7}]],
        "aggregator": {"model": "fake:agg"},
    }
)


def _request(content: str = "hi", **params: object) -> CompletionRequest:
    return CompletionRequest("m", (Message("user", content),), GenerationParams(**params))  # type: ignore[arg-type]


def test_key_covers_provider_model_messages_and_every_parameter() -> None:
    base = cache_key("p", _request())
    assert cache_key("p", _request()) == base
    assert cache_key("q", _request()) != base
    assert cache_key("p", _request("other")) != base
    assert cache_key("p", _request(seed=1)) != base
    assert cache_key("p", _request(temperature=0.7)) != base
    assert cache_key("p", _request(extra={"top_k": 5})) != base
    assert cache_key("p", _request(extra={"top_k": 6})) != cache_key(
        "p", _request(extra={"top_k": 5})
    )


async def test_a_second_run_makes_no_provider_call(tmp_path: Path) -> None:
    fake = FakeProvider(replies={"a": "alpha", "b": "beta", "agg": "final"})
    store = SQLiteCallStore(tmp_path / "calls.sqlite")
    first = await Mixture(SPEC, CachingRegistry(store=store).add("fake", fake)).arun("q")
    assert len(fake.calls) == 3
    # A new registry and a new store on the same file: nothing is called again.
    again = SQLiteCallStore(tmp_path / "calls.sqlite")
    second = await Mixture(SPEC, CachingRegistry(store=again).add("fake", fake)).arun("q")
    assert len(fake.calls) == 3
    assert second.output == first.output == "final"
    assert second.usage == first.usage
    assert [a.output for a in second.layers[0].agents] == ["alpha", "beta"]


async def test_unseeded_sampled_calls_are_reused_too(tmp_path: Path) -> None:
    fake = FakeProvider(replies={"m": ["first sample", "second sample"]})
    cached = CachedProvider(fake, SQLiteCallStore(tmp_path / "c.sqlite"))
    one = await cached.complete(_request(temperature=0.9))
    two = await cached.complete(_request(temperature=0.9))
    assert one.text == two.text == "first sample"
    assert len(fake.calls) == 1
    other_seed = await cached.complete(_request(temperature=0.9, seed=7))
    assert other_seed.text == "second sample"


async def test_failures_are_not_cached(tmp_path: Path) -> None:
    fake = FakeProvider(replies={"m": [RuntimeError("down"), "fine"]})
    cached = CachedProvider(fake, SQLiteCallStore(tmp_path / "c.sqlite"))
    with pytest.raises(RuntimeError):
        await cached.complete(_request())
    assert (await cached.complete(_request())).text == "fine"
    assert (await cached.complete(_request())).text == "fine"
    assert len(fake.calls) == 2


async def test_an_abandoned_stream_is_not_cached(tmp_path: Path) -> None:
    fake = FakeProvider(replies={"m": "one two three four"})
    cached = CachedProvider(fake, SQLiteCallStore(tmp_path / "c.sqlite"))
    stream = cached.stream(_request())
    await stream.__anext__()
    await stream.aclose()
    assert len(cached.store) == 0
    chunks = [c async for c in cached.stream(_request())]
    assert "".join(c.text for c in chunks) == "one two three four"
    assert len(cached.store) == 1


async def test_streamed_hits_replay_text_usage_and_finish(tmp_path: Path) -> None:
    fake = FakeProvider(replies={"m": "one two three"})
    cached = CachedProvider(fake, SQLiteCallStore(tmp_path / "c.sqlite"))
    live = await cached.complete(_request(max_tokens=2))
    with recording_hits() as hits:
        replay = [c async for c in cached.stream(_request(max_tokens=2))]
    assert "".join(c.text for c in replay) == live.text == "one two "
    assert replay[-1].usage == live.usage
    assert replay[-1].finish_reason == "length"
    assert [(h.model_id, h.text) for h in hits] == [("fake:m", "one two ")]
    assert hits[0].latency_s >= 0
    assert (cached.hits, cached.misses) == (1, 1)


class _Pause:
    def __await__(self) -> Generator[None, None, None]:
        yield


@pytest.mark.parametrize("recording", [recording_hits, recording_calls])
def test_a_recording_in_an_abandoned_coroutine_ends_quietly_outside_its_context(
    recording: Callable[[], AbstractContextManager[object]],
) -> None:
    # A run stopped mid-call leaves coroutines inside the block; the garbage collector
    # closes them later, from whatever context it runs in.
    async def stuck() -> None:
        with recording():
            await _Pause()

    coroutine = stuck()
    contextvars.copy_context().run(coroutine.send, None)
    coroutine.close()  # here, not in the context the block was entered in
    with recording() as inner:  # and the current context is as it was
        assert inner is not None


async def test_identical_concurrent_calls_are_made_once(tmp_path: Path) -> None:
    fake = FakeProvider(replies={"m": "slow answer"}, delay=0.05)
    cached = CachedProvider(fake, SQLiteCallStore(tmp_path / "c.sqlite"))
    results = await asyncio.gather(*(cached.complete(_request()) for _ in range(5)))
    assert {r.text for r in results} == {"slow answer"}
    assert len(fake.calls) == 1


def test_the_store_is_safe_across_threads(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from moa.providers.cache import CachedCall

    store = SQLiteCallStore(tmp_path / "c.sqlite")

    def write(i: int) -> None:
        store.put(f"k{i}", "p", "m", CachedCall(f"t{i}", Usage(1, 2, 1), "stop", 0.1))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(200)))
    assert len(store) == 200
    hit = store.get("k7")
    assert hit is not None and hit.text == "t7" and hit.usage == Usage(1, 2, 1)
    store.close()


def test_the_registry_wraps_every_provider_once(tmp_path: Path) -> None:
    fake = FakeProvider()
    registry = CachingRegistry(store=SQLiteCallStore(tmp_path / "c.sqlite")).add("x", fake)
    wrapped = registry.get("x")
    assert isinstance(wrapped, CachedProvider) and wrapped.inner is fake
    assert registry.get("x") is wrapped
    assert wrapped.name == "x"
    assert registry.cached() == [wrapped]
