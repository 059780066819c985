"""Paired comparison of two systems of one `moa eval` run, from its per-item log.

    python benchmarks/latency/paired.py docs/reports/latency-gsm8k/items.jsonl \
        gsm8k-standard gsm8k-chunked

Prints both accuracies on the items both systems finished, the paired difference
(second minus first) with the eval harness's bootstrap interval, the discordant
items with an exact McNemar test, and how often each system's final answer is the
answer one of its proposers gave.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from moa.eval.stats import mcnemar_exact, paired_difference


def _load(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    by_system: dict[str, dict[str, dict[str, Any]]] = {}
    for line in path.read_text("utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            by_system.setdefault(record["system"], {})[str(record["item_id"])] = record
    return by_system


def _follows(records: list[dict[str, Any]]) -> Counter[str]:
    """Per proposer model, the items whose final answer equals that proposer's answer."""
    counts: Counter[str] = Counter()
    for record in records:
        for call in record["calls"]:
            answer = call.get("extracted")
            if call["role"] == "proposer" and answer is not None and answer == record["extracted"]:
                counts[call["model"]] += 1
    return counts


def main(path: str, first: str, second: str) -> None:
    by_system = _load(Path(path))
    items = sorted(set(by_system[first]) & set(by_system[second]))
    a = [float(by_system[first][i]["score"]) for i in items]
    b = [float(by_system[second][i]["score"]) for i in items]
    diff = paired_difference(b, a).scaled(100)
    only_first = sum(x > y for x, y in zip(a, b, strict=True))
    only_second = sum(y > x for x, y in zip(a, b, strict=True))
    print(f"{len(items)} items finished by both")
    for name, scores in ((first, a), (second, b)):
        print(f"{name}: {100 * sum(scores) / len(scores):.1f}% correct")
    interval = f"95% CI [{diff.low:+.1f}, {diff.high:+.1f}]"
    print(f"{second} - {first}: {diff.mean:+.1f} points, {interval}")
    print(
        f"right only by {first}: {only_first}, only by {second}: {only_second}; "
        f"exact McNemar p = {mcnemar_exact(only_first, only_second):.2f}"
    )
    for name in (first, second):
        follows = _follows([by_system[name][i] for i in items])
        text = ", ".join(f"{model} {count}" for model, count in sorted(follows.items()))
        print(f"{name}: items whose final answer is this proposer's: {text}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: paired.py ITEMS.jsonl FIRST_SYSTEM SECOND_SYSTEM")
    main(*sys.argv[1:])
