"""Arithmetic "models" of known strength for the evaluation tests."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moa.providers.cache import CachingRegistry, SQLiteCallStore
from moa.providers.registry import register_kind
from moa.testing import FunctionProvider
from moa.types import CompletionRequest

FIXTURES = Path(__file__).parent.parent / "fixtures" / "eval"
GOLD = {"Tom": 7, "box": 60, "Sara": 750, "train": 180, "Ben": 12, "friends": 10000}


def _gold(request: CompletionRequest) -> int:
    question = request.messages[-1].content
    return next(value for word, value in GOLD.items() if word in question)


def arithmetic(request: CompletionRequest) -> str:
    """``strong`` is always right, ``weak`` right on even answers, ``agg`` trusts references."""
    gold = _gold(request)
    if request.model == "strong":
        return f"Let me compute.\nThe answer is {gold:,}"
    if request.model == "weak":
        return f"The answer is {gold if gold % 20 == 0 else gold + 1}"
    system = request.messages[0].content if request.messages[0].role == "system" else ""
    found = re.findall(r"The answer is ([\d,]+)", system)
    return f"The answer is {found[-1]}" if found else "I am not sure."


JUDGE_DATA = FIXTURES / "judge_validation"
"""A tiny AlpacaEval folder: 10 instructions, gpt4_1106_preview, Together-MoA(-Lite)."""


def _section(prompt: str, name: str) -> str:
    return prompt.split(f"[Response {name}]")[1].split(f"[End of response {name}]")[0].strip()


def longer(request: CompletionRequest) -> str:
    """A judge that prefers the longer response (the references are the longer ones)."""
    prompt = request.messages[-1].content
    a, b = _section(prompt, "A"), _section(prompt, "B")
    return "B is shorter.\n[[A]]" if len(a) >= len(b) else "A is shorter.\n[[B]]"


def first(request: CompletionRequest) -> str:
    """A judge with a position bias and nothing else: always the first response."""
    return "[[A]]"


def weak(request: CompletionRequest) -> str:
    return "meh"


class Interrupted(Exception):
    """Raised by :class:`StopAfter`, standing in for Ctrl-C."""


class StopAfter:
    """A run observer that interrupts the run after ``n`` finished items."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.total = self.done = 0

    def start(self, total: int, done: int) -> None:
        self.total, self.done = total, done

    def phase(self, text: str) -> None:
        pass

    def finished(self, record: dict[str, Any]) -> None:
        self.n -= 1
        if self.n == 0:
            raise Interrupted


def fake_registry(cache: str, builders: str | None = None) -> CachingRegistry:
    """The arithmetic models behind a call cache at ``cache`` (a Ray actor builds its own).

    With ``builders`` (a folder), each process that builds one leaves a file named by its id.
    """
    import os

    if builders is not None:
        Path(builders, str(os.getpid())).touch()

    registry = CachingRegistry(store=SQLiteCallStore(Path(cache)))
    registry.add("fake", FunctionProvider(arithmetic, name="fake"))
    return registry


def fake_judge_config(
    folder: Path, reply: Callable[[CompletionRequest], str], kind: str
) -> tuple[Path, FunctionProvider]:
    """A config file for ``--judge``: ``fake:judge``, where provider ``fake`` (of the new
    provider kind ``kind``) answers every model with ``reply``; and that provider."""
    provider = FunctionProvider(reply, name="fake")
    register_kind(kind, lambda name, settings, local: provider)
    path = folder / f"{kind}.yaml"
    path.write_text(
        "name: fake-judge\n"
        f"providers:\n  fake: {{kind: {kind}}}\n"
        'aggregator: {model: "fake:judge", temperature: 0}\n'
    )
    return path, provider
