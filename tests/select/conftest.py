"""A tiny GSM8K-format set and a scripted pool whose skills are known in advance.

Item ``i`` asks for ``i + 1``. ``strong`` is right unless ``i % 4 == 0``;
``weak`` is right on even items, so it covers ``strong``'s misses. A sample
with seed ``s`` of ``strong`` is right unless ``(i + s) % 4 == 0``. An
aggregator that sees candidate answers writes the right number when any
candidate has it (``good-agg`` behaviour) — unless it is ``bad``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from moa.testing import FunctionProvider
from moa.types import CompletionRequest

ITEMS = 40


def _item(request: CompletionRequest) -> int:
    user = [m.content for m in request.messages if m.role == "user"][-1]
    found = re.search(r"Item (\d+)", user)
    assert found, user
    return int(found.group(1))


def scripted(request: CompletionRequest) -> str:
    i = _item(request)
    right, wrong = f"The answer is {i + 1}", f"The answer is {i + 1000}"
    system = request.messages[0].content if request.messages[0].role == "system" else ""
    if "Candidate answer" in system:
        if request.model == "bad":
            return "The answer is 0"
        if "Best:" in system or "judge" in system:
            return "Best: 1"
        return right if right in system else wrong
    seed = request.params.seed or 0
    if request.model == "strong":
        return right if (i + seed) % 4 else wrong
    if request.model == "weak":
        return right if i % 2 == 0 else wrong
    return wrong


@pytest.fixture
def gsm8k(tmp_path: Path) -> Path:
    path = tmp_path / "gsm8k.jsonl"
    lines = [
        json.dumps({"question": f"Item {i}: what is {i} + 1?", "answer": f"{i}+1\n#### {i + 1}"})
        for i in range(ITEMS)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def mmlu(tmp_path: Path) -> Path:
    """Item ``i`` has four choices; the right one is letter ``i % 4`` (A, B, C, D)."""
    path = tmp_path / "mmlu.jsonl"
    lines = [
        json.dumps({"question": f"Item {i}: which one?", "choices": list("wxyz"), "answer": i % 4})
        for i in range(ITEMS)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def item_number() -> Callable[[CompletionRequest], int]:
    """The item a request asks about, for tests that script a pool of their own."""
    return _item


@pytest.fixture
def provider() -> FunctionProvider:
    return FunctionProvider(scripted)


Factory = Callable[[], FunctionProvider]
