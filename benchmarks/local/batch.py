"""Throughput of sampled answers from one local model: one at a time against decoded together.

    python benchmarks/local/batch.py --model qwen2.5-coder-1.5b --samples 4 --max-tokens 256

Both runs ask the same model the same question for ``--samples`` answers at
temperature 0.7 with seeds 1..N, the way a vote or Self-MoA does: first through a
provider with ``local.batch: 1`` (the calls queue for the model), then with
``local.batch: N`` (they share each decoding step). Round-robin over ``--runs``;
prints wall time and generated tokens per second of each, and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
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


async def main(model: str, samples: int, max_tokens: int, runs: int) -> None:
    providers = {
        "one at a time": LocalProvider(settings=LocalSettings(batch=1)),
        "batched": LocalProvider(settings=LocalSettings(batch=samples)),
    }
    for provider in providers.values():  # load the model and warm the batch context
        await _samples(provider, model, min(2, samples), 8)
    totals = {name: [0.0, 0] for name in providers}
    for _ in range(runs):
        for name, provider in providers.items():
            started = time.perf_counter()
            tokens = await _samples(provider, model, samples, max_tokens)
            totals[name][0] += time.perf_counter() - started
            totals[name][1] += tokens
    for provider in providers.values():
        await provider.unload()
    print(f"{model}: {samples} samples of up to {max_tokens} tokens, {runs} run(s) each")
    rates = {}
    for name, (seconds, tokens) in totals.items():
        rates[name] = tokens / seconds
        print(f"  {name:13s} {seconds / runs:6.1f} s a run, {rates[name]:6.1f} tokens/s")
    print(f"  batched / one at a time: {rates['batched'] / rates['one at a time']:.2f}x tokens/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--runs", type=int, default=2)
    options = parser.parse_args()
    asyncio.run(main(options.model, options.samples, options.max_tokens, options.runs))
