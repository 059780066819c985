"""Wall time of one interactive request: a configuration against the 1.5B model alone.

    python benchmarks/local/interactive.py                      # the `local` preset
    python benchmarks/local/interactive.py --config local-vote --runs 3
    python benchmarks/local/interactive.py --question code     # demo, chat, choice or code

Each question is answered by both, round-robin over ``--runs`` (no call cache, the
models loaded beforehand), the way `moa "question"` answers one person: wall time
to the whole answer and to its first text. Prints the medians, their ratio, the
calls each made and the answer, so the figures in the README can be checked.
"""

from __future__ import annotations

import argparse
import statistics
import time

from moa.config import build_mixture, load_config
from moa.engine.mixture import Mixture
from moa.engine.result import Result
from moa.engine.spec import AgentSpec, MixtureSpec

QUESTIONS = {
    "demo": (
        "A baker makes 48 rolls and sells them in bags of 6 for $4 a bag. "
        "How much money does he make?"
    ),
    "chat": "What is the capital of Australia?",
    "choice": (
        "Which gas do plants take in from the air to make their food?\n"
        "A. Oxygen\nB. Nitrogen\nC. Carbon dioxide\nD. Helium"
    ),
    "code": (
        "Complete this Python function.\n```python\ndef second_largest(numbers):\n"
        '    """Return the second largest distinct number in the list, or None.\n'
        "    >>> second_largest([4, 1, 3, 4])\n    3\n"
        "    >>> second_largest([2, 2]) is None\n    True\n"
        '    """\n```'
    ),
}
MODEL = "local:qwen2.5-coder-1.5b"


def alone(config_source: str) -> Mixture:
    """The 1.5B answering greedily, with the configuration's own local settings."""
    config = load_config(config_source)
    single = MixtureSpec(
        name=MODEL, aggregator=AgentSpec(model=MODEL, temperature=0.0, max_tokens=512, seed=0)
    )
    return Mixture(single, config.registry())


def timed(mixture: Mixture, question: str) -> tuple[float, float, Result]:
    started = time.perf_counter()
    result = mixture.run(question)
    wall = time.perf_counter() - started
    first = result.ttft_s if result.ttft_s is not None else wall
    return wall, first, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="local", help="config file or preset")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--question", action="append", choices=sorted(QUESTIONS), help="default: all"
    )
    args = parser.parse_args()
    systems = {"alone": alone(args.config), args.config: build_mixture(load_config(args.config))}
    for mixture in systems.values():  # load the model before timing
        mixture.run("Hi")
    for name in args.question or list(QUESTIONS):
        question = QUESTIONS[name]
        walls: dict[str, list[float]] = {s: [] for s in systems}
        firsts: dict[str, list[float]] = {s: [] for s in systems}
        last: dict[str, Result] = {}
        for _ in range(args.runs):
            for system, mixture in systems.items():
                wall, first, result = timed(mixture, question)
                walls[system].append(wall)
                firsts[system].append(first)
                last[system] = result
        print(f"== {name}: {question}")
        for system in systems:
            result = last[system]
            print(
                f"  {system:>12}: wall {statistics.median(walls[system]):6.1f} s, first text "
                f"{statistics.median(firsts[system]):6.1f} s, {result.usage.calls} call(s), "
                f"{result.usage.completion_tokens} completion tokens"
            )
            print(f"  {'':>12}  answer: {' '.join(result.output.split())[-160:]}")
        ratio = statistics.median(walls[args.config]) / statistics.median(walls["alone"])
        print(f"  wall time ratio {args.config} / alone: {ratio:.2f}x ({args.runs} runs each)")


if __name__ == "__main__":
    main()
