"""Throughput of one local model: calls one at a time against decoded together.

    python benchmarks/local/batch.py --model qwen2.5-coder-1.5b --samples 4 --max-tokens 256
    python benchmarks/local/batch.py --model qwen2.5-coder-1.5b --stream 12 --max-tokens 192

Samples (the default): both runs ask the same question for ``--samples`` answers
at temperature 0.7 with seeds 1..N, the way a vote or Self-MoA does, all at once.

``--stream N``: N different questions answered greedily with ``--samples`` of
them in flight at any time, the way ``moa eval`` and ``moa select`` send items
with ``--concurrency``. Answers end at different lengths, so a batch keeps its
rows busy only if a waiting call can take the row a finished one left.

The stream also prints each call's time to its first text, from when it was
sent: without batching it waits for the calls before it; in a batch, for a
free row.

Each run goes first through a provider with ``local.batch: 1`` (the calls queue
for the model), then with ``local.batch: N`` (they share each decoding step).
``--against B`` replaces the first with ``local.batch: B``, to compare two batch
widths on the same calls, e.g. ``--samples 16 --against 8``: the narrower batch
takes the calls that do not fit as its rows free up.
``--extra-buffers off`` runs both with llama.cpp's repacked weights off (see
docs/providers.md: where the repacked kernels are compute-bound, a batch gains
little over one call with them, and more without).
Round-robin over ``--runs``; prints wall time and generated tokens per second of
each, and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from moa.providers.local import LocalProvider
from moa.providers.settings import LocalSettings
from moa.types import CompletionRequest, GenerationParams, Message

QUESTION = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
    "muffins for her friends every day with four. She sells the remainder at the farmers' "
    "market daily for $2 per fresh duck egg. How much in dollars does she make every day at "
    "the farmers' market? Think step by step."
)


STREAM = (
    "A baker makes 48 rolls and sells them in bags of 6 for $4 a bag. How much does he earn?",
    "Tom reads 12 pages a day. How many days does he need for a book of 300 pages?",
    "A train travels 180 km in 2 hours, then 120 km in 1.5 hours. What is its average speed?",
    "Mia has 3 times as many stickers as Leo, who has 14. They give away 10. How many are left?",
    "A garden is 12 m long and 7 m wide. A path 1 m wide runs around it. What is the path's area?",
    "Pens cost $1.25 each or $12 for a box of 12. How much is saved on 36 pens by buying boxes?",
    "A tank holds 500 liters and leaks 2% of what is left each hour. How much is left after 3 h?",
    "Sara earns $15 an hour and 1.5 times that after 40 hours. What does she earn for 46 hours?",
)


async def _stream(
    provider: LocalProvider, model: str, n: int, width: int, max_tokens: int, waits: list[float]
) -> int:
    """Answer ``n`` questions, ``width`` at a time; ``waits`` gets each one's time to first text."""
    gate = asyncio.Semaphore(width)

    async def ask(index: int) -> int:
        question = f"{STREAM[index % len(STREAM)]} Think step by step."
        if index >= len(STREAM):
            question = f"Question {index + 1}. {question}"
        request = CompletionRequest(
            model,
            (Message("user", question),),
            GenerationParams(temperature=0.0, max_tokens=max_tokens),
        )
        tokens, first = 0, None
        async with gate:
            sent = time.perf_counter()
            async for chunk in provider.stream(request):
                if chunk.text and first is None:
                    first = time.perf_counter() - sent
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens
        if first is not None:
            waits.append(first)
        return tokens

    return sum(await asyncio.gather(*(ask(i) for i in range(n))))


async def _samples(provider: LocalProvider, model: str, n: int, max_tokens: int) -> int:
    messages = (Message("user", QUESTION),)
    requests = [
        CompletionRequest(
            model, messages, GenerationParams(temperature=0.7, seed=seed, max_tokens=max_tokens)
        )
        for seed in range(1, n + 1)
    ]
    answers = await asyncio.gather(*(provider.complete(r) for r in requests))
    return sum(a.usage.completion_tokens for a in answers)


async def main(
    model: str,
    samples: int,
    max_tokens: int,
    runs: int,
    stream: int,
    against: int,
    extra_buffers: bool | None,
) -> None:
    baseline = "one at a time" if against == 1 else f"batch of {against}"
    providers = {
        baseline: LocalProvider(settings=LocalSettings(batch=against, extra_buffers=extra_buffers)),
        "batched": LocalProvider(
            settings=LocalSettings(batch=samples, extra_buffers=extra_buffers)
        ),
    }
    for provider in providers.values():  # load the model and warm the batch context
        await _samples(provider, model, min(2, samples), 8)
    totals: dict[str, list[float]] = {name: [0.0, 0] for name in providers}
    waits: dict[str, list[float]] = {name: [] for name in providers}
    for _ in range(runs):
        for name, provider in providers.items():
            started = time.perf_counter()
            if stream:
                tokens = await _stream(provider, model, stream, samples, max_tokens, waits[name])
            else:
                tokens = await _samples(provider, model, samples, max_tokens)
            totals[name][0] += time.perf_counter() - started
            totals[name][1] += tokens
    for provider in providers.values():
        await provider.unload()
    shape = f"{samples} samples" if not stream else f"{stream} questions, {samples} in flight"
    buffers = {None: "", True: ", extra buffers on", False: ", extra buffers off"}[extra_buffers]
    print(f"{model}: {shape}, up to {max_tokens} tokens each, {runs} run(s) each{buffers}")
    rates = {}
    for name, (seconds, produced) in totals.items():
        rates[name] = produced / seconds
        line = f"  {name:13s} {seconds / runs:6.1f} s a run, {rates[name]:6.1f} tokens/s"
        if waits[name]:
            first = sorted(waits[name])
            median, slowest = statistics.median(first), first[-1]
            line += f", first text after {median:.1f} s (median), {slowest:.1f} s (max)"
        print(line)
    print(f"  batched / {baseline}: {rates['batched'] / rates[baseline]:.2f}x tokens/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument(
        "--stream", type=int, default=0, metavar="N", help="N questions, --samples in flight"
    )
    parser.add_argument(
        "--against", type=int, default=1, metavar="B", help="compare with local.batch B, not 1"
    )
    parser.add_argument(
        "--extra-buffers",
        choices=["auto", "on", "off"],
        default="auto",
        help="llama.cpp's repacked weights (local: {extra_buffers}) for both runs",
    )
    options = parser.parse_args()
    if options.against < 1 or options.against >= options.samples:
        parser.error("--against must be at least 1 and below --samples")
    asyncio.run(
        main(
            options.model,
            options.samples,
            options.max_tokens,
            options.runs,
            options.stream,
            options.against,
            {"auto": None, "on": True, "off": False}[options.extra_buffers],
        )
    )
