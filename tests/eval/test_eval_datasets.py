"""Loaders of the four formats, from files, folders and (optionally) Hugging Face."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eval_helpers import FIXTURES

from moa.errors import ConfigError
from moa.eval import get_task
from moa.eval.datasets import (
    load_alpaca_eval,
    load_gsm8k,
    load_mmlu,
    load_mt_bench,
    read_records,
)
from moa.eval.prompts import PromptSet


def test_gsm8k_gold_answers_are_normalized() -> None:
    items = load_gsm8k(FIXTURES / "gsm8k_mini.jsonl")
    assert [i.answer for i in items] == ["7", "60", "750", "180", "12", "10000"]
    assert items[0].turns[0].startswith("Tom has 3 apples")


def test_mmlu_answers_by_index_or_letter() -> None:
    items = load_mmlu(FIXTURES / "mmlu_mini.jsonl")
    assert [i.answer for i in items] == ["1", "1", "2"]
    assert items[0].id == "geography-1" and items[0].category == "geography"
    prompt = get_task("mmlu_redux").user_message(items[0], 0, PromptSet())
    assert "B. Paris" in prompt and "about geography" in prompt and "A, B, C, D" in prompt


def test_alpaca_eval_matches_reference_outputs_by_instruction() -> None:
    items = load_alpaca_eval(
        FIXTURES / "alpaca_instructions.json", FIXTURES / "alpaca_reference.json"
    )
    assert items[0].references == ("Red.",)
    assert items[1].meta["dataset"] == "vicuna"
    # A model_outputs.json is its own reference.
    assert (
        load_alpaca_eval(FIXTURES / "alpaca_reference.json")[2].references[0].startswith("A prime")
    )
    with pytest.raises(ConfigError, match="no reference output"):
        load_alpaca_eval(FIXTURES / "alpaca_instructions.json")


def test_mt_bench_finds_reference_answers_next_to_the_questions() -> None:
    items = load_mt_bench(FIXTURES / "mt_bench")
    assert [i.id for i in items] == ["1", "2"]
    assert items[0].references == () and items[1].references == ("144", "169")
    assert items[1].category == "math" and len(items[1].turns) == 2


def test_bad_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_gsm8k(tmp_path / "missing.jsonl")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "q"}\n')
    with pytest.raises(ConfigError, match="no 'answer' field"):
        load_gsm8k(broken)
    noisy = tmp_path / "noisy.jsonl"
    noisy.write_text(json.dumps({"question": "q", "answer": "no number"}) + "\n")
    with pytest.raises(ConfigError, match="####"):
        load_gsm8k(noisy)


def test_hugging_face_without_the_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # makes the import fail
    with pytest.raises(ConfigError, match="pip install datasets"):
        read_records("hf:openai/gsm8k:main@test")


def test_hugging_face_offline_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    fake = types.ModuleType("datasets")

    def load_dataset(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub\nlong traceback ...")

    fake.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(ConfigError) as error:
        read_records("hf:openai/gsm8k:main")
    message = str(error.value)
    assert (
        "Couldn't reach" in message and "--data PATH" in message and "long traceback" not in message
    )


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x0c", "\x1c"])
def test_json_lines_split_only_at_newlines(tmp_path: Path, separator: str) -> None:
    """JSON leaves these separators unescaped inside strings; they do not end a record."""
    path = tmp_path / "data.jsonl"
    records = [{"question": f"one{separator}two", "answer": 0}, {"question": "three", "answer": 1}]
    text = "\r\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\r\n"
    path.write_bytes(text.encode("utf-8"))
    assert read_records(path) == records
