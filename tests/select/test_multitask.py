"""One configuration for several tasks: floors per task, then significant gains, then cost."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from moa.config import parse_config
from moa.errors import ConfigError, ModelNotInstalledError
from moa.eval.runner import select_items
from moa.eval.stats import Estimate
from moa.eval.tasks import get_task
from moa.providers.cache import CachingRegistry, SQLiteCallStore
from moa.providers.registry import ProviderRegistry
from moa.select import (
    Budget,
    Candidate,
    MultiSelectRun,
    Sampling,
    SearchOptions,
    Standing,
    TaskData,
    TaskDelta,
    task_list,
    write_multi_outputs,
)
from moa.select.floors import rank
from moa.select.multireport import multi_markdown
from moa.strategies.vote import VoteOptions
from moa.testing import FunctionProvider
from moa.types import CompletionRequest

ItemNumber = Callable[[CompletionRequest], int]
Rule = Callable[[str, int], bool]


def two_task_pool(item_number: ItemNumber, mixture_right: Rule) -> FunctionProvider:
    """``strong`` alone is right unless ``i % 4 == 0``, ``weak`` alone on even items, on both
    tasks; every answer that is not a model's greedy one alone (samples, aggregations) is
    right where ``mixture_right(task, i)`` says."""

    def reply(request: CompletionRequest) -> str:
        i = item_number(request)
        user = [m.content for m in request.messages if m.role == "user"][-1]
        task = "mmlu" if "multiple-choice" in user else "gsm8k"
        alone = request.params.temperature == 0 and request.messages[0].role == "user"
        if alone:
            right = (i % 4 != 0) if request.model == "strong" else (i % 2 == 0)
        else:
            right = mixture_right(task, i)
        if task == "mmlu":
            return f"The answer is {'ABCD'[(i if right else i + 1) % 4]}"
        return f"The answer is {i + 1 if right else i + 1000}"

    return FunctionProvider(reply)


def multi_run(
    gsm8k: Path,
    mmlu: Path,
    floors: str = "",
    limits: str = "",
    heldouts: str = "",
    **options: object,
) -> MultiSelectRun:
    defaults: dict[str, object] = {
        "pool": ("fake:strong", "fake:weak"),
        "dev": 16,
        "heldout": 20,
        "max_evals": 6,
        "sampling": Sampling(samples=3),
    }
    search = SearchOptions(**{**defaults, **options})  # type: ignore[arg-type]
    tasks = task_list(
        ["gsm8k", "mmlu"],
        [str(gsm8k), str(mmlu)],
        [floors] if floors else [],
        limits.split() if limits else [],
        heldouts.split() if heldouts else [],
    )
    return MultiSelectRun(search, tasks, cache=None)


def helps_math_only(task: str, i: int) -> bool:
    # Mixtures: always right on gsm8k, right on two thirds of mmlu (strong alone: three quarters).
    return task == "gsm8k" or i % 3 != 0


async def test_every_local_model_not_installed_stops_the_selection_before_any_call(
    gsm8k: Path,
    mmlu: Path,
    item_number: ItemNumber,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("MOA_MODEL_DIR", str(tmp_path))
    provider = two_task_pool(item_number, helps_math_only)
    pool = ("fake:strong", "local:qwen2.5-coder-0.5b", "local:smollm2-135m")
    run = multi_run(gsm8k, mmlu, pool=pool)
    with pytest.raises(ModelNotInstalledError) as caught:
        await run.arun(ProviderRegistry().add("fake", provider))
    # Both are named, with one command, before the strong model's first dev item.
    assert caught.value.models == ("qwen2.5-coder-0.5b", "smollm2-135m")
    assert caught.value.install_command == "moa models pull qwen2.5-coder-0.5b smollm2-135m"
    assert provider.calls == []


async def test_a_win_on_one_task_does_not_excuse_breaking_the_floor_on_another(
    gsm8k: Path, mmlu: Path, item_number: ItemNumber
) -> None:
    provider = two_task_pool(item_number, helps_math_only)
    selection = await multi_run(gsm8k, mmlu).arun(ProviderRegistry().add("fake", provider))
    assert [t.task for t in selection.tasks] == ["gsm8k", "mmlu"]
    for task in selection.tasks:
        assert task.best_single is not None and task.best_single.name == "single strong"
        assert len(task.heldout_ids) == 20 and len(task.dev_ids) == 16
    # Voting on both kinds wins on gsm8k but loses too much on mmlu...
    both = selection.standing(
        Candidate("routed", ("fake:strong",) * 3, "fake:strong", routes=("number", "choice"))
    )
    assert both is not None
    gsm8k_delta, mmlu_delta = both.deltas
    assert gsm8k_delta.significant and gsm8k_delta.floor_met
    assert not mmlu_delta.floor_met and mmlu_delta.delta.low < -2
    assert both.below_floor() == ["mmlu"] and not both.qualifies
    # ...while voting only where the request asks for a number keeps the win and, on mmlu,
    # answers as the single model does.
    assert selection.recommended is not None
    assert selection.recommended.name == "routed strong x3 (number)"
    chosen = selection.standing(selection.recommended)
    assert chosen is not None and chosen.qualifies and chosen.wins == 1
    assert chosen.deltas[1].delta.mean == 0.0 and chosen.deltas[1].delta.low == 0.0
    assert selection.standings[0] == chosen
    spec = selection.recommended.spec(Sampling(samples=3))
    assert spec.strategy.type == "vote"
    options = spec.strategy.options()
    assert isinstance(options, VoteOptions)
    assert options.auto_votes == ("number",) and options.answer == "auto" and options.adaptive


async def test_when_every_mixture_breaks_a_floor_the_single_model_is_recommended(
    gsm8k: Path, mmlu: Path, item_number: ItemNumber
) -> None:
    # Every answer beyond a model's greedy one is right on two thirds of the items of
    # both tasks, the strong model alone on three quarters: spending more loses everywhere.
    provider = two_task_pool(item_number, lambda task, i: i % 3 != 0)
    selection = await multi_run(gsm8k, mmlu).arun(ProviderRegistry().add("fake", provider))
    assert selection.recommended is not None and selection.recommended.name == "single strong"
    routed = [s for s in selection.standings if s.candidate.kind == "routed"]
    assert len(routed) == 3 and not any(s.qualifies for s in routed)
    assert all(not s.qualifies or s.wins == 0 for s in selection.standings)
    assert selection.verdict.startswith("single strong, the single model best on average")
    assert selection.verdict.endswith("it is recommended")


async def test_a_per_task_floor_overrides_the_default(
    gsm8k: Path, mmlu: Path, item_number: ItemNumber
) -> None:
    provider = two_task_pool(item_number, helps_math_only)
    run = multi_run(gsm8k, mmlu, floors="mmlu=100")
    assert [t.floor for t in run.tasks] == [2.0, 100.0]
    selection = await run.arun(ProviderRegistry().add("fake", provider))
    assert selection.recommended is not None and selection.recommended.kind != "single"
    standing = selection.standing(selection.recommended)
    assert standing is not None and standing.qualifies and standing.wins == 1
    assert "meets the floor on all 2 tasks and gains significantly on 1" in selection.verdict


async def test_a_per_task_limit_carves_only_that_tasks_splits_from_its_first_items(
    gsm8k: Path, mmlu: Path, item_number: ItemNumber
) -> None:
    provider = two_task_pool(item_number, helps_math_only)
    run = multi_run(gsm8k, mmlu, limits="gsm8k=36")
    assert [t.limit for t in run.tasks] == [36, None]
    selection = await run.arun(ProviderRegistry().add("fake", provider))
    arithmetic, choice = selection.tasks
    first = [item.id for item in get_task("gsm8k").load(str(gsm8k), None)[:36]]
    assert sorted(arithmetic.dev_ids + arithmetic.heldout_ids) == sorted(first)
    # Without a limit: the first items of the whole data shuffled with the seed, which are
    # the items `moa eval --shuffle --seed 0 --limit 36` answers (so they share calls).
    questions = get_task("mmlu").load(str(mmlu), None)
    shuffled = select_items(questions, limit=36, seed=0, shuffle=True)
    assert choice.dev_ids + choice.heldout_ids == [item.id for item in shuffled]
    assert choice.dev_ids + choice.heldout_ids != [item.id for item in questions[:36]]


async def test_a_per_task_heldout_extends_only_that_tasks_heldout_split(
    gsm8k: Path, mmlu: Path, item_number: ItemNumber
) -> None:
    provider = two_task_pool(item_number, helps_math_only)
    registry = ProviderRegistry().add("fake", provider)
    plain = await multi_run(gsm8k, mmlu).arun(registry)
    run = multi_run(gsm8k, mmlu, heldouts="mmlu=24")
    assert [t.heldout for t in run.tasks] == [None, 24]
    larger = await run.arun(registry)
    for before, after in zip(plain.tasks, larger.tasks, strict=True):
        assert after.dev_ids == before.dev_ids  # the same dev split: its calls are shared
        assert after.heldout_ids[:20] == before.heldout_ids  # and the next items after it
    assert [len(t.heldout_ids) for t in larger.tasks] == [20, 24]
    recommended = larger.standing(larger.recommended)
    assert recommended is not None and [d.delta.n for d in recommended.deltas] == [20, 24]


async def test_a_mixture_that_meets_every_floor_and_wins_on_both_tasks_is_chosen(
    gsm8k: Path, mmlu: Path, item_number: ItemNumber, tmp_path: Path
) -> None:
    provider = two_task_pool(item_number, lambda task, i: True)
    run = multi_run(gsm8k, mmlu)
    selection = await run.arun(ProviderRegistry().add("fake", provider))
    assert selection.recommended is not None and selection.recommended.kind != "single"
    standing = selection.standing(selection.recommended)
    assert standing is not None and standing.qualifies and standing.wins == 2
    assert standing == selection.standings[0]
    assert all(d.delta.mean == pytest.approx(25.0) for d in standing.deltas)
    assert "gains significantly on 2 of them" in selection.verdict

    paths = write_multi_outputs(selection, run, tmp_path / "out", command="moa select ...")
    config = parse_config(yaml.safe_load(paths["config"].read_text()))
    assert config.name
    report = paths["report"].read_text()
    assert "# Agent selection on gsm8k, mmlu" in report
    assert f"## Per task: {selection.recommended.name} (recommended)" in report
    assert "| task | held-out items | best single (dev) |" in report
    assert "| gsm8k | 20 | single strong | 75.0 | 100.0 | +25.0 [" in report
    assert "The rule: a configuration qualifies when" in report
    assert "## Task mmlu" in report and "### Held-out results (20 items)" in report
    data = json.loads(paths["json"].read_text())
    assert data["recommended"] == selection.recommended.name
    assert [row["task"] for row in data["per_task"]] == ["gsm8k", "mmlu"]
    row = data["per_task"][1]
    assert row["floor_met"] and row["significant"] and row["heldout_items"] == 20
    assert data["rule"].startswith("a configuration qualifies")
    assert [t["task"] for t in data["tasks"]] == ["gsm8k", "mmlu"]


async def test_the_budget_holds_on_every_task_and_calls_are_cached(
    gsm8k: Path, mmlu: Path, item_number: ItemNumber, tmp_path: Path
) -> None:
    provider = two_task_pool(item_number, lambda task, i: True)
    limited = multi_run(gsm8k, mmlu, budget=Budget(max_calls=1))
    selection = await limited.arun(ProviderRegistry().add("fake", provider))
    assert selection.recommended is not None and selection.recommended.kind == "single"
    assert selection.skipped and all("over budget on gsm8k" in w for _, w in selection.skipped)
    assert all("; mmlu (est." in why for _, why in selection.skipped)

    store = tmp_path / "calls.sqlite"
    first = await multi_run(gsm8k, mmlu).arun(
        CachingRegistry(store=SQLiteCallStore(store)).add("fake", provider)
    )
    calls = len(provider.calls)
    second = await multi_run(gsm8k, mmlu).arun(
        CachingRegistry(store=SQLiteCallStore(store)).add("fake", provider)
    )
    assert len(provider.calls) == calls
    assert second.recommended == first.recommended


def test_tasks_pair_with_their_data_floors_and_limits(gsm8k: Path, mmlu: Path) -> None:
    tasks = task_list(["gsm8k", "mmlu-redux"], ["a", "b"], ["1.5", "mmlu=4"])
    assert tasks == (TaskData("gsm8k", "a", 1.5), TaskData("mmlu", "b", 4.0))
    limited = task_list(["gsm8k", "mmlu"], ["a", "b"], [], ["100", "mmlu-redux=50"])
    assert [(t.floor, t.limit) for t in limited] == [(2.0, 100), (2.0, 50)]
    assert [t.limit for t in task_list(["gsm8k", "mmlu"], ["a", "b"], [], ["gsm8k=9"])] == [
        9,
        None,
    ]
    with pytest.raises(ConfigError, match="--limit mmlu=0: give a whole number"):
        task_list(["gsm8k", "mmlu"], ["a", "b"], [], ["mmlu=0"])
    with pytest.raises(ConfigError, match=r"--limit 2\.5: give a whole number"):
        task_list(["gsm8k", "mmlu"], ["a", "b"], [], ["2.5"])
    with pytest.raises(ConfigError, match="--limit humaneval=3: humaneval is not a --task"):
        task_list(["gsm8k", "mmlu"], ["a", "b"], [], ["humaneval=3"])
    with pytest.raises(ConfigError, match="--limit: give at most one"):
        task_list(["gsm8k", "mmlu"], ["a", "b"], [], ["1", "2"])
    assert task_list(["gsm8k"], ["a"]) == (TaskData("gsm8k", "a", 2.0),)
    sized = task_list(
        ["gsm8k", "mmlu", "humaneval"], ["a", "b", "c"], [], [], ["150", "humaneval=114"]
    )
    assert [t.heldout for t in sized] == [150, 150, 114]
    with pytest.raises(ConfigError, match="--heldout mmlu=none: give a whole number"):
        task_list(["gsm8k", "mmlu"], ["a", "b"], [], [], ["mmlu=none"])
    with pytest.raises(ConfigError, match=r"--data: give one per --task.*2 --task, 1 --data"):
        task_list(["gsm8k", "mmlu"], ["a"])
    with pytest.raises(ConfigError, match="--task gsm8k is given twice"):
        task_list(["gsm8k", "GSM8K"], ["a", "b"])
    with pytest.raises(ConfigError, match="--floor humaneval=3: humaneval is not a --task"):
        task_list(["gsm8k", "mmlu"], ["a", "b"], ["humaneval=3"])
    with pytest.raises(ConfigError, match="--floor mmlu=lots: give points"):
        task_list(["gsm8k", "mmlu"], ["a", "b"], ["mmlu=lots"])
    with pytest.raises(ConfigError, match="--floor: give at most one"):
        task_list(["gsm8k", "mmlu"], ["a", "b"], ["1", "2"])
    with pytest.raises(ConfigError, match="unknown task"):
        task_list(["gsm9k", "mmlu"], ["a", "b"])


def _standing(name: str, *deltas: tuple[float, float], calls: float = 3.0) -> Standing:
    rows = tuple(
        TaskDelta(f"t{i}", "single a", 50.0, 50.0 + mean, Estimate(mean, low, mean + 5, 20), 2.0)
        for i, (mean, low) in enumerate(deltas)
    )
    return Standing(Candidate("moa", ("p:a", "p:b"), name), rows, calls)


def test_the_rule_orders_by_floor_then_gains_then_mean_then_cost() -> None:
    broken = _standing("broken", (30.0, 20.0), (-1.0, -2.5))  # a big win, one floor broken
    one_win = _standing("one-win", (10.0, 1.0), (0.0, -2.0))
    two_wins = _standing("two-wins", (3.0, 0.5), (2.0, 0.1))
    richer = _standing("richer", (12.0, 5.0), (-1.0, -1.5))
    cheaper = _standing("cheaper", (12.0, 5.0), (-1.0, -1.5), calls=2.0)
    order = [s.candidate.aggregator for s in rank([broken, one_win, richer, two_wins, cheaper])]
    assert order == ["two-wins", "cheaper", "richer", "one-win", "broken"]
    assert not broken.qualifies and broken.below_floor() == ["t1"]
    assert one_win.qualifies and one_win.wins == 1 and richer.mean_delta == pytest.approx(5.5)
    nan = _standing("nan", (math.nan, math.nan))
    assert not nan.qualifies and not nan.deltas[0].significant


def _code_problems(path: Path) -> Path:
    """HumanEval-format problems: ``add_<i>(x)`` returns ``x + i``, with one worked example."""
    rows = []
    for i in range(24):
        prompt = (
            f"def add_{i}(x):\n"
            f'    """Item {i}: add {i} to x.\n    >>> add_{i}(1)\n    {i + 1}\n    """\n'
        )
        test = f"def check(candidate):\n    assert candidate(5) == {i + 5}\n"
        rows.append(
            {"task_id": f"t/{i}", "prompt": prompt, "entry_point": f"add_{i}", "test": test}
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.skipif(sys.platform != "linux", reason="the code check needs the Linux sandbox")
async def test_code_requests_are_routed_to_the_check_on_their_examples(
    gsm8k: Path, tmp_path: Path, item_number: ItemNumber
) -> None:
    # The strong model's greedy code is wrong on every fourth problem, its samples always
    # right; on gsm8k every answer beyond a greedy one is wrong: only the code check pays.
    def reply(request: CompletionRequest) -> str:
        i = item_number(request)
        user = [m.content for m in request.messages if m.role == "user"][-1]
        greedy = request.params.temperature == 0 and request.messages[0].role == "user"
        right = (i % 4 != 0) if request.model == "strong" else (i % 2 == 0)
        if "def add_" in user:
            right = right if greedy else True
            return f"```python\ndef add_{i}(x):\n    return x + {i if right else i + 1}\n```"
        right = right if greedy else False
        return f"The answer is {i + 1 if right else i + 1000}"

    search = SearchOptions(
        pool=("fake:strong", "fake:weak"), dev=8, heldout=16, sampling=Sampling(samples=3)
    )
    tasks = task_list(["gsm8k", "humaneval"], [str(gsm8k), str(_code_problems(tmp_path / "h"))])
    registry = ProviderRegistry().add("fake", FunctionProvider(reply))
    selection = await MultiSelectRun(search, tasks, cache=None).arun(registry)
    names = {s.candidate.name for s in selection.standings}
    assert {"routed strong x3 (number, code)", "routed strong x3 (code)"} <= names
    assert selection.recommended is not None
    assert selection.recommended.name == "routed strong x3 (code)"
    standing = selection.standing(selection.recommended)
    assert standing is not None and standing.qualifies and standing.wins == 1
    gsm8k_delta, code_delta = standing.deltas
    assert gsm8k_delta.delta.mean == 0.0  # answered by the greedy answer alone
    heldout = selection.tasks[1].heldout_ids
    fixed = [i for i in heldout if int(i.split("/")[1]) % 4 == 0]  # greedy wrong, samples right
    assert code_delta.delta.mean == pytest.approx(100 * len(fixed) / len(heldout))
    # The task's own section gives pass rates in percent and Δ in points, as the table above.
    section = multi_markdown(selection).split("## Task humaneval")[1]
    assert "| configuration | pass rate % | Δ vs best single |" in section
    gain = (
        f"+{code_delta.delta.mean:.1f} [{code_delta.delta.low:+.1f}, {code_delta.delta.high:+.1f}]"
    )
    assert gain in section


def test_data_default_is_the_data_a_task_ships_with() -> None:
    from moa.eval.tasks import get_task

    default = get_task("humaneval").default_data
    assert default is not None
    (task,) = task_list(["humaneval"], ["default"])
    assert task.data == default() and Path(task.data).is_file()
    with pytest.raises(ConfigError, match="--data default: task gsm8k ships no data"):
        task_list(["humaneval", "gsm8k"], ["default", "default"])
