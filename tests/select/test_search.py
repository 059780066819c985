from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from moa.config import build_mixture, parse_config
from moa.errors import ConfigError, ProviderError
from moa.eval.tasks import get_task
from moa.providers.cache import CachingRegistry, SQLiteCallStore
from moa.providers.registry import ProviderRegistry
from moa.select import Budget, SearchOptions, SelectRun, split_items, write_outputs
from moa.select.report import markdown, summary
from moa.testing import FunctionProvider
from moa.types import CompletionRequest

POOL = ("fake:strong", "fake:weak")


ItemNumber = Callable[[CompletionRequest], int]


def default_dev_numbers(gsm8k: Path) -> set[int]:
    """The items of the dev split that :func:`selection_run`'s defaults carve."""
    dev, _ = split_items(get_task("gsm8k").load(str(gsm8k)), 16, 20, seed=0)
    return {int(item.turns[0].split()[1].rstrip(":")) for item in dev}


def selection_run(gsm8k: Path, **options: object) -> SelectRun:
    defaults: dict[str, object] = {"pool": POOL, "dev": 16, "heldout": 20, "max_evals": 6}
    search = SearchOptions(**{**defaults, **options})  # type: ignore[arg-type]
    return SelectRun(search, "gsm8k", str(gsm8k), cache=None)


async def test_a_mixture_that_beats_the_best_single_model_is_recommended(
    gsm8k: Path, provider: FunctionProvider, tmp_path: Path
) -> None:
    run = selection_run(gsm8k)
    logged: list[str] = []
    selection = await run.arun(ProviderRegistry().add("fake", provider), log=logged.append)
    assert selection.best_single is not None and selection.best_single.aggregator == "fake:strong"
    assert selection.recommended is not None and selection.recommended.kind != "single"
    recommended = selection.heldout[selection.recommended.name].mean
    single = selection.heldout["single strong"].mean
    assert recommended > single
    # The baselines always answer the held-out split.
    assert "single weak" in selection.heldout
    strong = logged.index("held-out: single strong")
    assert logged[strong + 1] == f"  {single:.3f} on 20 held-out items"
    assert selection.self_moa is not None and selection.self_moa.name in selection.heldout
    assert "beats the best single model" in selection.verdict
    # Diversity: weak is right on half of strong's misses... in fact on all of them here.
    (pair,) = selection.diversity
    assert pair.complement_ab == 1.0 and 0 < pair.answer < 1  # type: ignore[operator]

    paths = write_outputs(selection, run, tmp_path / "out", command="moa select ...")
    config = parse_config(yaml.safe_load(paths["config"].read_text()))
    fresh = FunctionProvider(provider.function)
    mixture = build_mixture(config, ProviderRegistry().add("fake", fresh))
    assert (await mixture.arun("Item 4: what is 4 + 1?")).output.endswith("5")
    report = paths["report"].read_text()
    for heading in ("## Recommendation", "## Held-out results", "## Configurations tried on dev"):
        assert heading in report
    assert "best single on held-out" in report and "Self-MoA of the best" in report


async def test_a_configuration_that_only_shines_on_dev_is_not_recommended(
    gsm8k: Path, item_number: ItemNumber
) -> None:
    dev_numbers = default_dev_numbers(gsm8k)

    def overfit(request: CompletionRequest) -> str:
        i = item_number(request)
        greedy_alone = request.params.temperature == 0 and request.messages[0].role == "user"
        # Every mixture is perfect on dev and useless elsewhere.
        good = (request.model == "strong" and i % 4 != 0) if greedy_alone else i in dev_numbers
        return f"The answer is {i + 1 if good else i + 1000}"

    run = selection_run(gsm8k, pool=("fake:strong", "fake:weak"))
    selection = await run.arun(ProviderRegistry().add("fake", FunctionProvider(overfit)))
    assert selection.chosen is not None and selection.chosen.kind != "single"
    assert selection.tried_by_name()[selection.chosen.name].dev.mean == 1.0
    assert selection.recommended is not None
    assert selection.recommended.name == "single strong"
    assert "nothing beat the best single model" in selection.verdict


async def test_the_budget_limits_what_is_tried_and_recommended(
    gsm8k: Path, provider: FunctionProvider
) -> None:
    run = selection_run(gsm8k, budget=Budget(max_calls=1))
    selection = await run.arun(ProviderRegistry().add("fake", provider))
    assert selection.recommended is not None and selection.recommended.kind == "single"
    assert selection.skipped and all("over budget" in why for _, why in selection.skipped)
    over = [t for t in selection.tried if not t.within_budget]
    assert over and all(t.candidate.kind != "single" for t in over)  # the baselines still ran


async def test_a_second_selection_is_answered_from_the_cache(
    gsm8k: Path, provider: FunctionProvider, tmp_path: Path
) -> None:
    store = tmp_path / "calls.sqlite"
    first = await selection_run(gsm8k).arun(
        CachingRegistry(store=SQLiteCallStore(store)).add("fake", provider)
    )
    calls = len(provider.calls)
    assert calls > 0
    second = await selection_run(gsm8k).arun(
        CachingRegistry(store=SQLiteCallStore(store)).add("fake", provider)
    )
    assert len(provider.calls) == calls
    assert second.recommended == first.recommended


def test_splits_are_disjoint_deterministic_and_sized(gsm8k: Path) -> None:
    items = get_task("gsm8k").load(str(gsm8k))
    dev, held = split_items(items, 10, 20, seed=3)
    assert len(dev) == 10 and len(held) == 20
    assert not {i.id for i in dev} & {i.id for i in held}
    assert [i.id for i in split_items(items, 10, 20, seed=3)[0]] == [i.id for i in dev]
    assert [i.id for i in split_items(items, 10, 20, seed=4)[0]] != [i.id for i in dev]
    with pytest.raises(ConfigError, match="fewer than"):
        split_items(items, 30, 20, seed=0)


def test_limit_carves_the_splits_from_the_first_items(gsm8k: Path) -> None:
    items = get_task("gsm8k").load(str(gsm8k))
    dev, held = split_items(items, 5, 10, seed=3, limit=15)
    assert {i.id for i in dev + held} == {i.id for i in items[:15]}
    with pytest.raises(ConfigError, match=r"the first 14 of \d+ items, fewer than --dev 5"):
        split_items(items, 5, 10, seed=3, limit=14)


async def test_the_single_model_is_not_re_picked_on_held_out(
    gsm8k: Path, item_number: ItemNumber
) -> None:
    dev_numbers = default_dev_numbers(gsm8k)

    def flip(request: CompletionRequest) -> str:
        i = item_number(request)
        # strong is right on dev only, weak on held-out only; mixtures are never right.
        alone = request.params.temperature == 0 and request.messages[0].role == "user"
        good = alone and (i in dev_numbers) == (request.model == "strong")
        return f"The answer is {i + 1 if good else i + 1000}"

    run = selection_run(gsm8k)
    selection = await run.arun(ProviderRegistry().add("fake", FunctionProvider(flip)))
    assert selection.recommended is not None and selection.recommended.name == "single strong"
    assert selection.heldout_best_single is not None
    assert selection.heldout_best_single.name == "single weak"
    assert "caution: single weak scored" in selection.verdict


@pytest.mark.parametrize("protocol", ["pairwise", "graded"])
async def test_an_open_ended_task_is_selected_with_the_judge_s_protocol(
    tmp_path: Path, protocol: str
) -> None:
    data = tmp_path / "outputs.json"  # AlpacaEval's model_outputs.json: the references
    rows = [{"instruction": f"Item {i}: explain it", "output": "a fair answer"} for i in range(40)]
    data.write_text(json.dumps(rows))
    seen: list[str] = []

    def reply(request: CompletionRequest) -> str:
        prompt = request.messages[-1].content
        if request.model == "judge":
            seen.append("pair" if "[Response B]" in prompt else "one")
            if "[Response B]" in prompt:  # the longer response wins
                a, b = (prompt.split(f"[Response {x}]")[1] for x in "AB")
                return "[[A]]" if len(a.split("[End")[0]) > len(b.split("[End")[0]) else "[[B]]"
            answer = prompt.split("[Answer]")[1].split("[End of answer]")[0]
            return f"Rating: [[{min(10, len(answer.split()))}]]"
        return "a long, careful and complete answer" if request.model == "strong" else "meh"

    search = SearchOptions(pool=POOL, dev=16, heldout=20, max_evals=4)
    run = SelectRun(
        search, "alpaca_eval", str(data), cache=None, judge="fake:judge", judge_protocol=protocol
    )
    selection = await run.arun(ProviderRegistry().add("fake", FunctionProvider(reply)))
    assert selection.best_single is not None and selection.best_single.aggregator == "fake:strong"
    assert set(seen) == {"pair" if protocol == "pairwise" else "one"}


async def test_failed_items_are_counted_per_configuration_and_the_report_warns(
    gsm8k: Path, provider: FunctionProvider, item_number: ItemNumber
) -> None:
    dev = sorted(default_dev_numbers(gsm8k))[:2]

    def weak_fails_twice(request: CompletionRequest) -> str:
        if request.model == "weak" and item_number(request) in dev:
            raise ProviderError("the server went away", provider="fake", model="weak")
        return provider.function(request)  # type: ignore[no-any-return]

    selection = await selection_run(gsm8k, max_evals=0).arun(
        ProviderRegistry().add("fake", FunctionProvider(weak_fails_twice))
    )
    weak = next(t for t in selection.tried if t.candidate.name == "single weak")
    failures = weak.dev.failures()
    assert len(failures) == 2 and all(o.score == 0.0 for o in failures)
    assert all("the server went away" in (o.error or "") for o in failures)
    report = markdown(selection)
    assert "**Warning:** 2 items failed and were scored as wrong" in report
    assert "- single weak, dev: 2 of 16 items failed; the first" in report
    data = summary(selection)
    assert data["failed_items"] == 2 and data["dev"]["single weak"]["failed"] == 2
    assert data["dev"]["single strong"]["failed"] == 0


async def test_a_report_without_failed_items_has_no_warning(
    gsm8k: Path, provider: FunctionProvider
) -> None:
    selection = await selection_run(gsm8k, max_evals=0).arun(
        ProviderRegistry().add("fake", provider)
    )
    report = markdown(selection)
    assert "Warning" not in report and "Failed items" not in report
    assert summary(selection)["failed_items"] == 0


async def test_a_timeout_reaches_every_call_without_changing_the_configuration(
    gsm8k: Path,
) -> None:
    from moa.engine.spec import MixtureSpec
    from moa.select.evaluate import Evaluator
    from moa.testing import FakeProvider

    items = get_task("gsm8k").load(str(gsm8k))[:2]
    spec = MixtureSpec.model_validate({"aggregator": {"model": "fake:slow"}})
    slow = FakeProvider(default="The answer is 1", delay=0.5)
    registry = ProviderRegistry().add("fake", slow)
    patient = await Evaluator(get_task("gsm8k"), registry).evaluate("slow", spec, items)
    assert all(o.error is None for o in patient.outcomes)
    hurried = Evaluator(get_task("gsm8k"), registry, timeout=0.1)
    timed_out = await hurried.evaluate("slow", spec, items)
    assert all(o.error and "Timeout" in o.error for o in timed_out.outcomes)
    assert timed_out.spec == spec  # the report names the configuration, not its timeout
