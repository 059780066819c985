"""How `answer: auto` routes the evaluation data: number, choice, checked code, or one answer.

    python benchmarks/routing/question_kinds.py [--data ../shared/data] [--show number]

Reads each family through the project's own loaders and prompts (the request a
system sees in `moa eval`) and, for GSM8K and MMLU-Redux, also the bare question a
person would type. ``--show KIND`` lists the AlpacaEval instructions routed to KIND.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from moa.eval import get_task
from moa.eval.prompts import PromptSet
from moa.question_kind import question_kind


def line(name: str, texts: Sequence[str]) -> None:
    counts = Counter(question_kind(text) or "one answer" for text in texts)
    shares = ", ".join(
        f"{kind} {n} ({100 * n / len(texts):.1f}%)" for kind, n in counts.most_common()
    )
    print(f"{name:<34} {len(texts):>5}  {shares}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--show", choices=["number", "choice", "code"], default=None)
    args = parser.parse_args()
    prompts = PromptSet()
    families = {
        "gsm8k": args.data / "gsm8k/test.jsonl",
        "mmlu": args.data / "mmlu_redux/mmlu_redux_ok.jsonl",
        "humaneval": None,
    }
    print(f"{'requests':<34} {'n':>5}  routed to")
    for name, data in families.items():
        task = get_task(name)
        if data is None and task.default_data is not None:
            data = Path(task.default_data())
        items = task.load(data) if data is not None else []
        line(f"{name} (the moa eval prompt)", [task.user_message(i, 0, prompts) for i in items])
        if name != "humaneval":
            line(f"{name} (the bare question)", [item.turns[0] for item in items])
    alpaca = json.loads((args.data / "alpaca_eval/instructions.json").read_text("utf-8"))
    instructions = [entry["instruction"] for entry in alpaca]
    line("alpaca_eval instructions", instructions)
    mt_bench = args.data / "mt_bench/question.jsonl"
    firsts = [json.loads(row)["turns"][0] for row in mt_bench.read_text("utf-8").split("\n") if row]
    line("mt_bench first turns", firsts)
    if args.show:
        for text in instructions:
            if question_kind(text) == args.show:
                print(f"  {' '.join(text.split())[:110]}")


if __name__ == "__main__":
    main()
