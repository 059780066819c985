"""The ``graded`` judge protocol: two answers compared by grading each alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_helpers import FIXTURES, fake_judge_config, weak
from eval_helpers import JUDGE_DATA as DATA
from typer.testing import CliRunner

from moa import Mixture, MixtureSpec
from moa.cli.main import app
from moa.errors import ConfigError
from moa.eval import EvalOptions, EvalRun
from moa.eval.judge import Judge
from moa.eval.judge_check import JudgeCheck, JudgeCheckOptions
from moa.eval.prompts import PromptSet
from moa.eval.systems import System, judge_key
from moa.providers.cache import CachingRegistry, SQLiteCallStore
from moa.providers.registry import ProviderRegistry
from moa.testing import FunctionProvider
from moa.types import CompletionRequest

JUDGE = MixtureSpec.model_validate({"aggregator": {"model": "j:judge"}})


def by_length(request: CompletionRequest) -> str:
    """Grades one answer alone: 2 for a short one, 8 for a long one; never sees two."""
    prompt = request.messages[-1].content
    assert "[Response B]" not in prompt, "a graded judge is shown one answer at a time"
    answer = prompt.split("[Answer]")[1].split("[End of answer]")[0].strip()
    return f"Rating: [[{8 if len(answer) > 20 else 2}]]"


def _judge(reply: object, protocol: str = "graded") -> tuple[Judge, FunctionProvider]:
    provider = FunctionProvider(reply, name="j")  # type: ignore[arg-type]
    return Judge(Mixture(JUDGE, ProviderRegistry().add("j", provider)), protocol=protocol), provider


async def test_the_higher_grade_wins_and_equal_grades_split() -> None:
    judge, provider = _judge(by_length)
    long, short = "A careful, complete and correct answer.", "meh"
    win = await judge.pairwise("Explain.", long, short)
    assert win.preference == 1.0 and win.verdicts == ("output", "output")
    assert win.grades == (8.0, 2.0) and len(provider.calls) == 2
    loss = await judge.pairwise("Explain.", short, long)
    assert loss.preference == 0.0 and loss.verdicts == ("reference", "reference")
    tie = await judge.pairwise("Explain.", short, "no")
    assert tie.preference == 0.5 and tie.verdicts == (None, None)
    assert tie.to_dict()["grades"] == [2.0, 2.0]


async def test_an_unparsed_grade_gives_no_preference() -> None:
    judge, _ = _judge(lambda request: "I cannot rate this.")
    verdict = await judge.pairwise("Explain.", "an answer", "another")
    assert verdict.preference is None and verdict.grades == (None, None)


def test_an_unknown_protocol_is_a_configuration_error() -> None:
    from moa.cli.common import JUDGE_PROTOCOLS
    from moa.eval.judge import PROTOCOLS

    with pytest.raises(ConfigError, match="'ranked' is not one of: pairwise, graded"):
        _judge(by_length, "ranked")
    assert JUDGE_PROTOCOLS == PROTOCOLS
    result = CliRunner().invoke(app, ["eval", "alpaca_eval", "--judge-protocol", "ranked"])
    assert result.exit_code == 2 and "'ranked' is not one of" in result.output


def test_the_protocol_is_part_of_the_judge_s_key() -> None:
    prompts = PromptSet()
    judge = System("judge", JUDGE)
    pairwise = judge_key(judge, prompts)
    # Pairwise keys are what they were, so existing validations keep holding.
    assert pairwise == judge.key({"judge_pairwise": prompts.get("judge_pairwise")})
    assert judge_key(judge, prompts, "graded") not in (pairwise, None)


def test_a_graded_validation_grades_the_reference_once_per_instruction(tmp_path: Path) -> None:
    provider = FunctionProvider(by_length, name="j")
    registry = CachingRegistry(store=SQLiteCallStore(tmp_path / "calls.sqlite"))
    registry.add("j", provider).add("w", FunctionProvider(weak, name="w"))
    options = JudgeCheckOptions(
        judge="j:judge", data=DATA, out=tmp_path / "v", items=10, weak="w:weak", protocol="graded"
    )
    document = JudgeCheck(options, registry=registry).run()
    assert document["judge"]["protocol"] == "graded"
    assert document["criteria"]["weak_loses"]["passed"] is True
    # The reference, the weak answer, Together-MoA's and Together-MoA-Lite's, each graded
    # once; MoA-Lite wrote MoA's text on 9 instructions, and the cache grades that once.
    assert len(provider.calls) == 10 + 10 + 10 + 1
    report = (tmp_path / "v" / "report.md").read_text()
    assert "graded above the weak answer (no order): 100.0%" in report
    assert "does not apply: each answer is graded alone" in report


def test_moa_eval_judges_by_grades_and_a_pairwise_validation_does_not_cover_it(
    tmp_path: Path,
) -> None:
    def answers(request: CompletionRequest) -> str:
        if request.model == "judge":
            return by_length(request)
        return "A long, careful and complete answer." if request.model == "good" else "meh"

    config, _ = fake_judge_config(tmp_path, answers, "graded-judge-fake")
    args = ["eval", "alpaca_eval", "--data", str(FIXTURES / "alpaca_instructions.json")]
    args += ["--reference", str(FIXTURES / "alpaca_reference.json"), "--system", "fake:good"]
    args += ["--judge", str(config), "--no-baselines", "--cache", str(tmp_path / "c.sqlite")]
    args += ["--out", str(tmp_path / "run"), "--judge-protocol", "graded"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    records = (tmp_path / "run" / "items.jsonl").read_text().splitlines()
    assert all("grades" in json.loads(line)["judge"] for line in records)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["judge_protocol"] == "graded"
    # The validation command the report suggests validates the same protocol.
    assert "--judge-protocol graded" in (tmp_path / "run" / "report.md").read_text()
    options = EvalOptions(
        "alpaca_eval",
        str(FIXTURES / "alpaca_instructions.json"),
        tmp_path / "other",
        systems=["fake:good"],
        reference=str(FIXTURES / "alpaca_reference.json"),
        judge=str(config),
    )
    assert EvalRun(options).judge_key() != info["judge_key"]
