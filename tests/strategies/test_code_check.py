"""``answer: auto`` with ``code``: samples' code is run on the request's worked examples."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from moa import Mixture, MixtureSpec, ProviderRegistry, TextDelta
from moa.config import parse_config
from moa.errors import ConfigError
from moa.strategies import code_check
from moa.testing import FunctionProvider
from moa.types import CompletionRequest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux")

REQUEST = '''Complete the following Python function.

```python
def evens(numbers):
    """Keep the even numbers, in order.
    >>> evens([1, 2, 3, 4])
    [2, 4]
    >>> evens([5, 6])
    [6]
    >>> evens([])
    []
    """
```'''

RIGHT = "```python\ndef evens(numbers):\n    return [n for n in numbers if n % 2 == 0]\n```"
ODD = "```python\ndef evens(numbers):\n    return [n for n in numbers if n % 2]\n```"
TWO_OF_THREE = "```python\ndef evens(numbers):\n    return [n for n in numbers if n in (2, 4)]\n```"
BROKEN = "```python\ndef evens(numbers):\n    return numbers[\n```"


def by_seed(replies: list[str]) -> FunctionProvider:
    def reply(request: CompletionRequest) -> str:
        return replies[request.params.seed or 0]

    return FunctionProvider(reply, name="fake")


def mixture(provider: FunctionProvider, **options: Any) -> Mixture:
    strategy = {
        "type": "vote",
        "samples": 5,
        "greedy_first": True,
        "answer": "auto",
        "auto_votes": ["number", "code"],
        **options,
    }
    spec = MixtureSpec.model_validate({"aggregator": {"model": "fake:m"}, "strategy": strategy})
    return Mixture(spec, ProviderRegistry().add("fake", provider))


async def test_greedy_code_that_passes_the_examples_answers_alone() -> None:
    provider = by_seed([RIGHT, ODD, ODD, ODD, ODD])
    result = await mixture(provider).arun(REQUEST)
    assert result.output == RIGHT
    assert result.usage.calls == 1
    assert provider.calls[0].params.temperature == 0.0
    assert any("sample 1: 3/3; sample 1 answers (3/3)" in n for n in result.notes)


async def test_failing_greedy_code_draws_the_rest_and_the_first_passing_sample_answers() -> None:
    provider = by_seed([ODD, BROKEN, RIGHT, RIGHT.replace("n %", "n  %"), ODD])
    events = [e async for e in mixture(provider).astream(REQUEST)]
    result = events[-1].result  # type: ignore[union-attr]
    assert result.output == RIGHT
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == RIGHT
    assert result.usage.calls == 5
    assert len(result.layers) == 1
    assert [a.agent for a in result.layers[0].agents] == [f"sample {i}" for i in range(1, 6)]
    note = next(n for n in result.notes if "answers (3/3)" in n)
    assert "sample 1: 1/3" in note and "sample 2: 0/3" in note and "sample 3 answers" in note


async def test_without_a_full_pass_the_most_examples_win_and_ties_keep_the_earlier() -> None:
    result = await mixture(by_seed([ODD, BROKEN, TWO_OF_THREE, TWO_OF_THREE, ODD])).arun(REQUEST)
    assert result.output == TWO_OF_THREE  # 2/3 (sample 3) beats 1/3 (samples 1 and 5)
    result = await mixture(by_seed([ODD, BROKEN, ODD, BROKEN, ODD])).arun(REQUEST)
    assert result.output == ODD  # all 1/3 or worse: the greedy answer stands


async def test_code_without_examples_or_without_code_in_auto_votes_gets_one_answer() -> None:
    bare = REQUEST.split(">>>")[0] + '"""\n```'
    provider = by_seed([ODD, RIGHT, RIGHT, RIGHT, RIGHT])
    result = await mixture(provider).arun(bare)
    assert result.output == ODD and result.usage.calls == 1
    result = await mixture(by_seed([ODD] * 5), auto_votes=["number"]).arun(REQUEST)
    assert result.usage.calls == 1
    assert any("code with worked examples, not voted on" in n for n in result.notes)


async def test_where_the_sandbox_cannot_protect_files_no_code_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(code_check, "_probe", lambda: "no protection in this test")
    provider = by_seed([ODD, RIGHT, RIGHT, RIGHT, RIGHT])
    events = [e async for e in mixture(provider).astream(REQUEST)]
    result = events[-1].result  # type: ignore[union-attr]
    assert result.output == ODD
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == ODD  # streamed
    assert result.usage.calls == 1
    assert any("not run, no protection in this test" in n for n in result.notes)


def test_code_is_a_kind_auto_votes_accepts_and_the_timeout_is_bounded() -> None:
    base = {"aggregator": {"model": "fake:m"}}
    strategy = {"type": "vote", "samples": 3, "answer": "auto", "auto_votes": ["code"]}
    parse_config({**base, "strategy": {**strategy, "check_timeout": 5}})
    with pytest.raises(ConfigError, match="check_timeout"):
        parse_config({**base, "strategy": {**strategy, "check_timeout": 0}})
    with pytest.raises(ConfigError, match="auto_votes"):
        parse_config({**base, "strategy": {**strategy, "auto_votes": ["prose"]}})
