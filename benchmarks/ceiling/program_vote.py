"""Does a program's answer raise the vote toward its oracle? Dev/held-out split of a GSM8K report.

    python benchmarks/ceiling/program_vote.py docs/reports/gsm8k-program-vote [--dev 50]

Reads the report's items.jsonl (systems `local-vote` and `program-vote-W`, run by
`moa eval`), reruns each program call's code in the sandbox to read what it printed
(the program alone), and prints, on the first ``--dev`` items and on the rest:
accuracy of each system, the paired difference against the vote with its bootstrap
95% interval, and calls per item. The weight is chosen on the dev items only (highest
accuracy, the smallest weight on a tie); the held-out items judge it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from moa.answers import extract_answer
from moa.eval.code import python_blocks
from moa.eval.sandbox import SandboxLimits, arun_python
from moa.eval.stats import mcnemar_exact, paired_difference, wilson_interval

VOTE = "local-vote"
PREFIX = "program-vote-"
_PROGRAM = 5
"""The program call's position in the layer: after the five samples."""


async def printed_answer(code_reply: str) -> str | None:
    blocks = python_blocks(code_reply)
    result = await arun_python(blocks[0] if blocks else code_reply, SandboxLimits(timeout=10))
    lines = result.stdout.strip().splitlines()
    return extract_answer(lines[-1], "number") if result.ok and lines else None


def same_number(a: str | None, gold: str) -> bool:
    try:
        return a is not None and abs(float(a) - float(gold)) < 1e-6
    except ValueError:
        return False


def line(name: str, scores: list[float], vote: list[float], calls: float) -> str:
    n = len(scores)
    low, high = wilson_interval(sum(scores), n)
    text = f"  {name:<18} {100 * sum(scores) / n:5.1f} [{100 * low:4.1f}, {100 * high:4.1f}]"
    if scores is not vote:
        d = paired_difference(scores, vote)
        only_a = sum(1 for a, b in zip(scores, vote, strict=True) if a > b)
        only_b = sum(1 for a, b in zip(scores, vote, strict=True) if a < b)
        text += (
            f"  Δ vs vote {100 * d.mean:+5.1f} [{100 * d.low:+5.1f}, {100 * d.high:+5.1f}]"
            f"  won {only_a} lost {only_b} (McNemar p {mcnemar_exact(only_a, only_b):.3g})"
        )
    return text + f"  {calls:.2f} calls/item"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--dev", type=int, default=50)
    args = parser.parse_args()
    run = json.loads((args.report / "run.json").read_text("utf-8"))
    order: list[str] = run["item_ids"]
    records: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in (args.report / "items.jsonl").read_text("utf-8").splitlines():
        record = json.loads(row)
        records[record["system"]][record["item_id"]] = record
    weights = sorted(
        (s for s in records if s.startswith(PREFIX)), key=lambda s: float(s[len(PREFIX) :])
    )
    items = [i for i in order if all(i in records[s] for s in [VOTE, *weights])]
    program_right: dict[str, float] = {}
    for item in items:
        record = records[weights[0]][item]
        call = next((c for c in record["calls"] if c["index"] == _PROGRAM), {})
        # Logs record what the program printed; a log written before they did is run again.
        answer = call.get("computed") or await printed_answer(call.get("output") or "")
        program_right[item] = float(same_number(answer, record["gold"]))
    splits = {"dev": items[: args.dev], "held-out": items[args.dev :]}
    best = None
    for split, ids in splits.items():
        if not ids:
            continue
        vote = [records[VOTE][i]["score"] for i in ids]
        print(f"== {split}: {len(ids)} items")
        print(line(VOTE, vote, vote, _calls(records[VOTE], ids)))
        print(line("program alone", [program_right[i] for i in ids], vote, 1.0))
        oracle = [float(_some_sample_right(records[VOTE][i]) or program_right[i]) for i in ids]
        print(line("oracle", oracle, vote, 0))
        accuracy = {}
        for system in weights:
            scores = [records[system][i]["score"] for i in ids]
            accuracy[system] = sum(scores)
            print(line(system, scores, vote, _calls(records[system], ids)))
        if split == "dev":
            best = max(weights, key=lambda s: (accuracy[s], -float(s[len(PREFIX) :])))
    if best is not None and splits["held-out"]:
        print(f"chosen on dev: {best}; its held-out line above is the result")


def _some_sample_right(record: dict[str, Any]) -> bool:
    return any(c.get("correct") for c in record["calls"] if c["role"] == "proposer")


def _calls(by_item: dict[str, dict[str, Any]], ids: list[str]) -> float:
    return sum(float(by_item[i]["usage"]["calls"]) for i in ids) / len(ids)


if __name__ == "__main__":
    asyncio.run(main())
