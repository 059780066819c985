"""The worked examples of a code request, and how many of them a reply's code gets right.

A request to complete a Python function often shows what the function should
return: doctest lines (``>>> f(2)`` then ``4``) or calls written out in its
docstring (``f(2) == 4``, ``f(2) ➞ 4``, ``f(2) returns 4``). Those examples
are part of the request, so a reply's code can be run on them before it is
shown: a reply that gets them wrong is wrong. :func:`code_examples` reads them
(the function they belong to, and the request's code, which a reply completes);
:func:`examples_program` builds the program that runs a reply's code on them and
prints how many it got right; :func:`check_reply` runs it in the sandbox.

Only examples whose arguments and expected values are Python literals are
kept (a doctest may set up names first); anything else is skipped, never
guessed. The program is untrusted model output and runs only in the sandbox.
"""

from __future__ import annotations

import ast
import doctest
import re
import secrets
from dataclasses import dataclass
from functools import lru_cache

from moa.eval.code import completion_program, python_blocks
from moa.eval.sandbox import SandboxLimits, arun_python

__all__ = [
    "CodeExamples",
    "Example",
    "ExamplesResult",
    "check_reply",
    "code_examples",
    "describe",
    "examples_program",
]

# What separates a written-out call from its value: ``==>``, ``=>``, ``->``, ``➞``, ``==``,
# ``=``, ``returns``, ``should return``, ``# returns``.
_ARROW = re.compile(
    r"^\s*(?:==>|=>|->|➞|==|=|#?\s*(?:should\s+)?returns?:?|should\s+be|is)\s*(.+?)\s*\.?\s*$",
    re.IGNORECASE,
)
_WORDS = {"true": "True", "false": "False", "none": "None", "null": "None"}
_MAX_EXAMPLES = 20
_MAX_TEXT = 100_000
"""Longer requests are not searched for examples (parsing runs on the event loop)."""


@dataclass(frozen=True)
class Example:
    """One worked example: statements to run first, an expression, and what it should give."""

    setup: tuple[str, ...]
    expression: str
    expected: str
    """The expected value as written: a Python literal, or (from a doctest) the printed text."""


@dataclass(frozen=True)
class CodeExamples:
    """The request's code, the function its examples call, and the examples."""

    code: str
    entry_point: str
    examples: tuple[Example, ...]


@dataclass(frozen=True)
class ExamplesResult:
    """How a reply's code did on the examples."""

    passed: int
    total: int
    detail: str
    """``passed``, or why the run did not count (``timeout``, the error's last line)."""

    @property
    def all_passed(self) -> bool:
        return self.total > 0 and self.passed == self.total


@lru_cache(maxsize=16)
def code_examples(text: str) -> CodeExamples | None:
    """The examples of the last function in ``text``'s Python code that has some, if any.

    Cached: routing a request (:func:`moa.question_kind.question_kind`) and checking
    its replies read the same request's examples, so it is parsed once.
    """
    if len(text) > _MAX_TEXT:
        return None
    for code in reversed(python_blocks(text)):
        try:
            module = ast.parse(code)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        for node in reversed(module.body):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            docstring = ast.get_docstring(node, clean=True)
            if not docstring:
                continue
            examples = _doctest_examples(docstring) or _written_examples(docstring, node.name)
            if examples:
                return CodeExamples(code, node.name, tuple(examples[:_MAX_EXAMPLES]))
    return None


def _doctest_examples(docstring: str) -> list[Example]:
    try:
        parsed = doctest.DocTestParser().get_examples(docstring)
    except ValueError:  # inconsistent indentation and the like: not a usable doctest
        return []
    examples: list[Example] = []
    setup: list[str] = []
    for example in parsed:
        source, want = example.source.strip(), example.want.strip()
        if not want:
            if _compiles(source, "exec"):
                setup.append(source)
            continue
        if _compiles(source, "eval") and not want.startswith("Traceback"):
            examples.append(Example(tuple(setup), source, want))
    return examples


def _written_examples(docstring: str, name: str) -> list[Example]:
    """Calls of ``name`` with literal arguments, written out with their value on one line."""
    examples = []
    for line in docstring.splitlines():
        start = line.find(name + "(")
        if start < 0 or (start > 0 and (line[start - 1].isalnum() or line[start - 1] == "_")):
            continue
        end = _closing_paren(line, start + len(name))
        if end is None:
            continue
        call = line[start : end + 1]
        match = _ARROW.match(line[end + 1 :])
        if not match or not _literal_call(call, name):
            continue
        expected = _WORDS.get(match.group(1).strip().lower(), match.group(1).strip())
        if _is_literal(expected):
            examples.append(Example((), call, expected))
    return examples


def _closing_paren(line: str, opening: int) -> int | None:
    depth = 0
    quote = ""
    for index in range(opening, len(line)):
        char = line[index]
        if quote:
            if char == quote and line[index - 1] != "\\":
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                return index
    return None


def _literal_call(call: str, name: str) -> bool:
    try:
        node = ast.parse(call, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        return False
    if node.func.id != name or node.keywords:
        return False
    return all(_is_literal(ast.unparse(argument)) for argument in node.args)


def _is_literal(text: str) -> bool:
    try:
        ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _compiles(source: str, mode: str) -> bool:
    try:
        compile(source, "<example>", mode, dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


# Runs after the reply's definitions; a marker with a fresh token carries the count, so
# nothing the reply's code prints can pass for it.
_RUNNER = """

def _moa_examples(examples, marker):
    import ast as _ast
    import math as _math
    import signal as _signal

    def _alarm(signum, frame):
        raise TimeoutError("example took too long")

    def _same(value, expected):
        try:
            literal = _ast.literal_eval(expected)
        except Exception:
            flat = " ".join(expected.split())
            return " ".join(repr(value).split()) == flat or " ".join(str(value).split()) == flat
        if isinstance(literal, bool) or isinstance(value, bool):
            return value is literal
        if isinstance(literal, float) or isinstance(value, float):
            try:
                return _math.isclose(value, literal, rel_tol=1e-6, abs_tol=1e-9)
            except TypeError:
                return False
        return bool(value == literal)

    _signal.signal(_signal.SIGALRM, _alarm)
    passed = 0
    for setup, expression, expected in examples:
        names = dict(globals())
        try:
            _signal.setitimer(_signal.ITIMER_REAL, {per_example})
            for statement in setup:
                exec(statement, names)
            ok = _same(eval(expression, names), expected)
        except BaseException:
            ok = False
        finally:
            _signal.setitimer(_signal.ITIMER_REAL, 0)
        passed += bool(ok)
    print(marker, passed, len(examples), flush=True)


_moa_examples({examples!r}, {marker!r})
"""


def examples_program(
    examples: CodeExamples, reply: str, marker: str, *, per_example: float = 2.0
) -> str:
    """The program that runs ``reply``'s code on the examples and prints ``marker passed total``."""
    program = completion_program(examples.code, reply, examples.entry_point)
    cases = [(list(e.setup), e.expression, e.expected) for e in examples.examples]
    runner = _RUNNER.replace("{per_example}", repr(per_example))
    runner = runner.replace("{examples!r}", repr(cases)).replace("{marker!r}", repr(marker))
    return program + runner


async def check_reply(
    examples: CodeExamples, reply: str, *, timeout: float = 10.0
) -> ExamplesResult:
    """Run ``reply``'s code on the examples in the sandbox."""
    marker = "moa-examples-" + secrets.token_hex(8)
    total = len(examples.examples)
    per_example = max(0.1, min(2.0, timeout / (total + 1)))
    program = examples_program(examples, reply, marker, per_example=per_example)
    result = await arun_python(program, SandboxLimits(timeout=timeout))
    for line in reversed(result.stdout.splitlines()):
        parts = line.split()
        if len(parts) == 3 and parts[0] == marker and parts[1].isdigit():
            return ExamplesResult(int(parts[1]), total, "passed")
    return ExamplesResult(0, total, result.failure())


def describe(result: ExamplesResult) -> str:
    """``3/3``, or ``0/3 (NameError: ...)`` when the program did not get to the examples."""
    text = f"{result.passed}/{result.total}"
    return text if result.detail == "passed" else f"{text} ({result.detail})"
