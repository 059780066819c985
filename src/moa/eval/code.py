"""Code-generation scoring (HumanEval): read the code out of a reply, run the item's tests.

A reply may hold the whole function in a fenced block, only its body, prose
around unfenced code, example calls and tests of its own, or stop mid-line at
``max_tokens``. :func:`completion_program` turns any of these into one module:
the item's prompt (which keeps the prompt's imports and helper functions), then
the model's code, cut back to the longest prefix that compiles, with only its
imports, definitions and constant assignments kept (a model's own example
calls, ``print``\\ s and asserts would otherwise decide the score). The item's
``check`` function then runs against it in the :mod:`moa.eval.sandbox`.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from typing import Any

from moa.eval.datasets import EvalItem
from moa.eval.sandbox import SandboxLimits, SandboxResult, arun_python

__all__ = [
    "CodeScore",
    "checked_program",
    "completion_program",
    "extract_code",
    "python_blocks",
    "score_code",
    "score_code_record",
]

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.S | re.M)
_CODE_START = re.compile(r"^(?:def |async def |class |import |from \w[\w.]* import |@)", re.M)
_KEPT = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_PYTHON_TAGS = {"", "python", "py", "python3"}


@dataclass(frozen=True)
class CodeScore:
    """Whether the tests passed, the program that ran them, and why it failed."""

    passed: bool
    program: str
    reason: str
    """``passed``, ``timeout``, or the last line of the error (e.g. ``AssertionError``)."""
    isolation: dict[str, Any]

    @classmethod
    def from_run(cls, program: str, result: SandboxResult) -> CodeScore:
        reason = "passed" if result.ok else result.failure()
        return cls(result.ok, program, reason, result.isolation.__dict__)


def extract_code(reply: str, entry_point: str) -> str:
    """The code of a reply: its best fenced block, or the code part of unfenced text."""
    blocks: list[tuple[str, str]] = [
        (m.group(1).lower(), m.group(2))
        for m in _FENCE.finditer(reply)
        if m.group(1).lower() in _PYTHON_TAGS
    ]
    if blocks:
        defining = [b for _, b in blocks if _defines(b, entry_point)]
        if defining:
            return defining[0]
        tagged = [b for tag, b in blocks if tag]
        return (tagged or [b for _, b in blocks])[0]
    if _defines(reply, entry_point):
        start = _CODE_START.search(reply)
        return reply[start.start() :] if start else reply
    return reply


def python_blocks(text: str) -> list[str]:
    """The fenced Python blocks of ``text``; with none, its code from the first definition on."""
    blocks = [m.group(2) for m in _FENCE.finditer(text) if m.group(1).lower() in _PYTHON_TAGS]
    if blocks:
        return blocks
    start = _CODE_START.search(text)
    return [text[start.start() :]] if start else []


def _defines(code: str, entry_point: str) -> bool:
    pattern = rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\("
    return re.search(pattern, code, re.M) is not None


def completion_program(prompt: str, reply: str, entry_point: str) -> str:
    """The module to test: the prompt, then the model's function (or its body), cleaned."""
    code = extract_code(reply, entry_point)
    if _defines(code, entry_point):
        code = textwrap.dedent(code)
        prefix = prompt.rstrip() + "\n\n\n"
    else:
        code = _as_body(code)
        prefix = prompt if prompt.endswith("\n") else prompt + "\n"
    lines = code.splitlines()
    # An answer cut at max_tokens ends mid-statement: keep the longest prefix that compiles.
    for end in range(len(lines), -1, -1):
        source = prefix + "\n".join(lines[:end]) + "\n"
        if _compiles(source):
            return _definitions_only(source)
    return prefix + code


def _as_body(code: str) -> str:
    """A body written flush left gets the function's indentation."""
    lines = code.strip("\n").splitlines()
    first = next((line for line in lines if line.strip()), "")
    if first and not first[0].isspace():
        return "\n".join("    " + line if line.strip() else line for line in lines)
    return "\n".join(lines)


def _compiles(source: str) -> bool:
    try:
        compile(source, "<completion>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True


def _definitions_only(source: str) -> str:
    """Imports, functions, classes and constant assignments; example calls and tests go."""
    module = ast.parse(source)
    kept = [node for node in module.body if _is_definition(node)]
    lines = source.splitlines()
    parts = []
    for node in kept:
        decorators = getattr(node, "decorator_list", [])
        start = min([node.lineno, *(d.lineno for d in decorators)])
        end = node.end_lineno or node.lineno
        parts.append("\n".join(lines[start - 1 : end]))
    return "\n\n".join(parts) + "\n"


def _is_definition(node: ast.stmt) -> bool:
    if isinstance(node, _KEPT):
        return True
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        return not any(isinstance(n, ast.Call) for n in ast.walk(node))
    return False


def checked_program(item: EvalItem, reply: str) -> str:
    """The whole program that decides an item: the completed function, its tests, the check."""
    prompt, test, entry_point = item.meta["prompt"], item.meta["test"], item.meta["entry_point"]
    program = completion_program(prompt, reply, entry_point)
    return f"{program}\n\n{test}\n\ncheck({entry_point})\n"


async def score_code(item: EvalItem, reply: str, limits: SandboxLimits | None = None) -> CodeScore:
    """Run ``item``'s tests on the code of ``reply`` in the sandbox."""
    program = checked_program(item, reply)
    return CodeScore.from_run(program, await arun_python(program, limits))


async def score_code_record(
    record: dict[str, Any], item: EvalItem, limits: SandboxLimits | None = None
) -> None:
    """Score a log record in place: its final output, and every call's own output.

    Sets ``score`` (1 or 0), ``tests`` (why it failed) and ``isolation``; each call's
    ``correct``; and for mixtures the ``oracle`` (some call's code passed), the
    bound a perfect aggregator could reach. Equal outputs are run once.
    """
    runs: dict[str, CodeScore] = {}

    async def run(text: str) -> CodeScore:
        if text not in runs:
            runs[text] = await score_code(item, text, limits)
        return runs[text]

    final = await run(record.get("output") or "")
    record["score"] = float(final.passed)
    record["tests"] = final.reason
    record["isolation"] = final.isolation
    passed_any = final.passed
    for call in record.get("calls", []):
        if call.get("output") is None:
            continue
        call["correct"] = (await run(call["output"])).passed
        passed_any = passed_any or call["correct"]
    if len(record.get("calls", [])) > 1:
        record["oracle"] = passed_any
