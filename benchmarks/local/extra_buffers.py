"""Decoding and prompt speed of one local model with llama.cpp's extra buffers off and on.

    python benchmarks/local/extra_buffers.py [--model qwen2.5-coder-1.5b] [--rounds 2]

Extra buffers let llama.cpp repack the weights at load time (CPU_REPACK layouts,
and AMX on builds that have it). The two loads alternate over ``--rounds``; each
answers one question greedily (200 tokens: mostly decoding) and then evaluates a
400-token prompt (prompt processing alone). Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time

from moa.providers.catalog import CATALOG, model_dir
from moa.providers.llama_load import has_amx_kernels, load_llama

QUESTION = "Explain in detail how a hash map works, with an example in Python."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b", choices=sorted(CATALOG))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    llama_cpp = importlib.import_module("llama_cpp")
    if has_amx_kernels(llama_cpp):
        raise SystemExit("this llama.cpp build has AMX kernels: extra buffers are not safe here")
    path = model_dir() / CATALOG[args.model].filename
    decode: dict[bool, list[float]] = {False: [], True: []}
    prompt: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for extra in (False, True):
            llm = load_llama(llama_cpp, path, n_ctx=2048, threads=args.threads, extra_buffers=extra)
            started = time.perf_counter()
            out = llm.create_chat_completion(
                [{"role": "user", "content": QUESTION}], max_tokens=200, temperature=0.0, seed=0
            )
            decode[extra].append(
                out["usage"]["completion_tokens"] / (time.perf_counter() - started)
            )
            tokens = llm.tokenize(("word " * 400).encode())
            llm.reset()
            started = time.perf_counter()
            llm.eval(tokens)
            prompt[extra].append(len(tokens) / (time.perf_counter() - started))
            del llm
    answer = {extra: statistics.median(values) for extra, values in decode.items()}
    reading = {extra: statistics.median(values) for extra, values in prompt.items()}
    for extra in (False, True):
        state = "on " if extra else "off"
        print(
            f"extra buffers {state}: answer {answer[extra]:5.1f} tok/s, "
            f"prompt {reading[extra]:6.1f} tok/s"
        )
    print(
        f"on / off: answer {answer[True] / answer[False]:.2f}x, "
        f"prompt {reading[True] / reading[False]:.2f}x"
    )


if __name__ == "__main__":
    main()
