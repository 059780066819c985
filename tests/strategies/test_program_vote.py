"""``program_votes``: one more call writes a program; what it prints joins the vote."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from moa import Mixture, MixtureSpec, ProviderRegistry
from moa.config import parse_config
from moa.errors import ConfigError
from moa.strategies import code_check
from moa.testing import FunctionProvider
from moa.types import CompletionRequest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux")

QUESTION = "A box holds 3 rows of 4 eggs. How many eggs are in the box?"


def provider(answers: list[str], program: str) -> FunctionProvider:
    """Sample ``i`` states ``answers[i]``; the program call writes ``program``."""

    def reply(request: CompletionRequest) -> str:
        if "write a Python program" in request.messages[-1].content:
            return f"```python\n{program}\n```"
        return f"Reasoning {request.params.seed}. The answer is {answers[request.params.seed or 0]}"

    return FunctionProvider(reply, name="fake")


def mixture(fake: FunctionProvider, **options: Any) -> Mixture:
    strategy = {"type": "vote", "samples": 5, "greedy_first": True, **options}
    spec = MixtureSpec.model_validate({"aggregator": {"model": "fake:m"}, "strategy": strategy})
    return Mixture(spec, ProviderRegistry().add("fake", fake))


async def test_below_one_vote_the_program_breaks_a_tie() -> None:
    fake = provider(["7", "12", "7", "12", "5"], "rows = 3\nper_row = 4\nprint(rows * per_row)")
    result = await mixture(fake, program_votes=0.5).arun(QUESTION)
    assert result.output == "Reasoning 1. The answer is 12"
    assert result.usage.calls == 6
    assert len(result.layers[0].agents) == 5
    (program_call,) = [c for c in fake.calls if c.params.seed == 5]
    assert program_call.params.temperature == 0.0
    assert program_call.messages[-1].content.startswith(QUESTION + "\n\nDo not answer in prose.")
    assert any(n == "program vote: printed '12'" for n in result.notes)
    assert any("'12': 2.5, '7': 2, '5': 1" in n for n in result.notes)
    (recorded,) = result.extra_calls
    assert recorded.computed == "12"  # what the program printed, beside the code it wrote
    assert recorded.to_dict()["computed"] == "12"
    samples = result.layers[0].agents
    assert all(c.computed is None and "computed" not in c.to_dict() for c in samples)


async def test_below_one_vote_it_does_not_overturn_a_majority() -> None:
    fake = provider(["7", "7", "7", "12", "12"], "print(12)")
    result = await mixture(fake, program_votes=0.5).arun(QUESTION)
    assert result.output == "Reasoning 0. The answer is 7"  # 3 against 2.5


async def test_a_heavy_program_wins_alone_and_shows_its_code_and_output() -> None:
    fake = provider(["1", "2", "3", "4", "5"], "print(3 * 4)")
    result = await mixture(fake, program_votes=2).arun(QUESTION)
    assert "print(3 * 4)" in result.output
    assert result.output.endswith("Running it prints: 12\n\nThe answer is 12")


@pytest.mark.parametrize(
    ("program", "why"),
    [("print(1 / 0)", "ZeroDivisionError"), ("while True:\n    pass", "timeout")],
)
async def test_a_failing_program_leaves_the_plain_vote(program: str, why: str) -> None:
    fake = provider(["7", "7", "12", "12", "12"], program)
    result = await mixture(fake, program_votes=2, check_timeout=2).arun(QUESTION)
    assert result.output == "Reasoning 2. The answer is 12"
    assert any(n.startswith("program vote:") and why in n for n in result.notes)


async def test_without_file_protection_no_program_is_written_or_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(code_check, "_probe", lambda: "no protection in this test")
    fake = provider(["7", "12", "7", "12", "5"], "print(12)")
    result = await mixture(fake, program_votes=0.5, on_tie="first").arun(QUESTION)
    assert result.usage.calls == 5
    assert result.output == "Reasoning 0. The answer is 7"
    assert any("program vote: not run, no protection in this test" in n for n in result.notes)


async def test_only_number_answers_get_a_program() -> None:
    fake = provider(["A", "B", "A", "B", "A"], "print(12)")
    result = await mixture(fake, program_votes=1, answer="choice").arun("Pick:\nA. x\nB. y")
    assert result.usage.calls == 5


def test_program_votes_need_samples_and_the_full_vote() -> None:
    base = {"aggregator": {"model": "fake:m"}}
    with pytest.raises(ConfigError, match="program_votes needs samples"):
        parse_config({**base, "strategy": {"type": "vote", "program_votes": 1}})
    strategy = {"type": "vote", "samples": 5, "program_votes": 1, "adaptive": True}
    with pytest.raises(ConfigError, match="not with adaptive"):
        parse_config({**base, "strategy": strategy})
    with pytest.raises(ConfigError, match="program_votes"):
        parse_config({**base, "strategy": {"type": "vote", "samples": 5, "program_votes": -1}})


@pytest.mark.parametrize("options", [{"program_votes": 1}, {"adaptive": True}])
async def test_configured_layers_skip_the_options_with_a_note(options: dict[str, Any]) -> None:
    fake = provider(["7", "12", "7", "12", "5"], "print(12)")
    strategy = {"type": "vote", "samples": 5, **options}
    spec = MixtureSpec.model_validate(
        {
            "layers": [[{"model": "fake:m", "seed": seed} for seed in range(3)]],
            "aggregator": {"model": "fake:m"},
            "strategy": strategy,
        }
    )
    result = await Mixture(spec, ProviderRegistry().add("fake", fake)).arun(QUESTION)
    name = next(iter(options))
    assert any(f"{name} skipped" in note for note in result.notes), result.notes
    assert result.usage.calls == 5 + 3  # every sample, then the configured layer
    assert result.output == "Reasoning 0. The answer is 7"
