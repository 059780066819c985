"""One configuration for several tasks: a joint search over per-task searches.

Each task keeps what a single-task selection has (see :mod:`moa.select.search`):
its own dev and held-out splits (carved with the same ``seed``), its scorer,
its measurements and its best single model (the best on its dev split). The
pool is ordered by the mean dev score over the tasks (in points), the
configurations are enumerated once for the whole pool, a configuration runs on
every task's dev split, and it fits the budget only if it does on every task.
The best on average over the dev splits, the runners-up, every single model
and the Self-MoA of the best model on average answer every held-out split;
:mod:`moa.select.floors` then decides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from moa.errors import ConfigError
from moa.eval.datasets import EvalItem
from moa.select.candidates import Candidate
from moa.select.diversity import Embedder
from moa.select.evaluate import Evaluator
from moa.select.floors import Standing, points, rank, task_delta
from moa.select.search import (
    SearchOptions,
    Selection,
    TaskSearch,
    cost_text,
    enumerate_candidates,
    routed_candidates,
    split_items,
)

__all__ = ["MultiSelection", "run_multi_search"]


@dataclass
class MultiSelection:
    """The joint search's outcome; ``tasks`` holds each task's own :class:`Selection`."""

    options: SearchOptions
    tasks: list[Selection]
    floors: dict[str, float]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    best_single: Candidate | None = None
    """The single model best on average over the dev splits."""
    self_moa: Candidate | None = None
    chosen: Candidate | None = None
    """The best configuration on average over the dev splits, within the budget."""
    standings: list[Standing] = field(default_factory=list)
    """Every configuration that could be recommended, in the rule's order."""
    recommended: Candidate | None = None
    verdict: str = ""

    def standing(self, candidate: Candidate | None) -> Standing | None:
        return next((s for s in self.standings if s.candidate == candidate), None)


def _single(model: str) -> Candidate:
    return Candidate("single", (model,), model)


class _JointSearch:
    def __init__(
        self,
        options: SearchOptions,
        searches: list[TaskSearch],
        floors: Mapping[str, float],
        log: Callable[[str], None],
    ) -> None:
        self.options = options
        self.searches = searches
        self.log = log
        self.selection = MultiSelection(options, [s.selection for s in searches], dict(floors))
        kinds = {s.answer_kind for s in searches}
        exact = all(s.exact for s in searches)
        # One kind of answer is voted on as such; several are told apart per request.
        self.vote = (kinds.pop() if len(kinds) == 1 else "auto") if exact else None
        self.routed: list[Candidate] = []

    def dev_points(self, name: str) -> float:
        return sum(
            s.selection.tried_by_name()[name].dev.mean * points(s.task) for s in self.searches
        ) / len(self.searches)

    def dev_cost(self, name: str, key: str) -> float:
        values = [s.selection.tried_by_name()[name].measured[key] for s in self.searches]
        return sum(values) / len(values)

    def tried_everywhere(self, candidate: Candidate) -> bool:
        return all(candidate.name in s.selection.tried_by_name() for s in self.searches)

    def proxy(self, candidate: Candidate) -> float | None:
        found = [p for p in (s.proxy(candidate) for s in self.searches) if p is not None]
        return sum(found) / len(found) if found else None

    async def try_everywhere(self, candidate: Candidate) -> None:
        for search in self.searches:
            await search.try_on_dev(candidate, search.proxy(candidate))

    async def search(self) -> MultiSelection:
        selection, options = self.selection, self.options
        for search in self.searches:
            ranked_here = await search.measure_singles()
            search.selection.best_single = _single(ranked_here[0])
            search.measure_diversity()
        latency = {m: sum(s.stats[m].latency_s for s in self.searches) for m in options.pool}
        ranked = sorted(options.pool, key=lambda m: (-self.dev_points(_single(m).name), latency[m]))
        selection.best_single = _single(ranked[0])
        self.log(f"best single model on average over the dev splits: {ranked[0]}")
        sampled = ranked[: max(options.sample_models, 1)]
        n = options.sampling.samples
        selection.self_moa = Candidate("self-moa", (ranked[0],) * n, ranked[0])
        for model in sampled:
            first = (
                Candidate("vote", (model,) * n, model, answer=self.vote)
                if self.vote is not None
                else Candidate("self-moa", (model,) * n, model)
            )
            for search in self.searches:
                tried = await search.try_on_dev(first, search.proxy(first))
                search.record_answers(model, tried.dev, samples=True)
        # Routed configurations reuse the samples' calls: every one is tried.
        self.routed = routed_candidates(options, sampled, [s.route_kind for s in self.searches])
        for candidate in self.routed:
            await self.try_everywhere(candidate)
        await self.try_everywhere(selection.self_moa)
        pending, allows = [], options.budget.allows
        for candidate in enumerate_candidates(options, ranked, sampled, self.vote):
            if self.tried_everywhere(candidate):
                continue
            costs = {s.task.name: candidate.estimated_cost(s.stats) for s in self.searches}
            over = [f"{t} (est. {cost_text(c)})" for t, c in costs.items() if not allows(c)]
            if over:
                selection.skipped.append((candidate.name, f"over budget on {'; '.join(over)}"))
                continue
            calls = max(c["calls"] for c in costs.values())
            pending.append((candidate, self.proxy(candidate), calls))
        pending.sort(key=lambda c: (-(c[1] if c[1] is not None else -1.0), c[2]))
        for candidate, _, _ in pending[: options.max_evals]:
            await self.try_everywhere(candidate)
        for candidate, proxy, _ in pending[options.max_evals :]:
            shown = "" if proxy is None else f", estimate {proxy:.3f}"
            selection.skipped.append((candidate.name, f"not tried (max evals{shown})"))
        await self.check_heldout(ranked)
        return selection

    async def check_heldout(self, ranked: Sequence[str]) -> None:
        selection = self.selection
        tried = [t.candidate for t in self.searches[0].selection.tried]
        eligible = [
            c
            for c in tried
            if self.tried_everywhere(c)
            and all(s.selection.tried_by_name()[c.name].within_budget for s in self.searches)
        ]
        if not eligible:
            raise ConfigError(
                "no configuration fits the budget on every task, not even a single model; "
                "raise the budget"
            )
        eligible.sort(key=lambda c: (-self.dev_points(c.name), self.dev_cost(c.name, "calls")))
        selection.chosen = eligible[0]
        finalists = [c for c in eligible if c.kind != "single"][: self.options.finalists]
        assert selection.self_moa is not None and selection.best_single is not None
        routed = [c for c in self.routed if c in eligible]  # cheap on held-out too
        wanted = [_single(m) for m in ranked] + [
            selection.self_moa,
            *finalists,
            eligible[0],
            *routed,
        ]
        wanted = list(dict.fromkeys(wanted))
        for candidate in wanted:
            for search in self.searches:
                await search.answer_heldout(candidate)
        for search in self.searches:
            heldout = search.selection.heldout
            singles = [_single(m) for m in ranked]
            search.selection.heldout_best_single = max(singles, key=lambda c: heldout[c.name].mean)
            search.selection.chosen = selection.chosen
            search.selection.self_moa = selection.self_moa
        mixtures = [c for c in wanted if c.kind != "single" and c in eligible]
        standings = [self.standing(c) for c in [selection.best_single, *mixtures]]
        selection.standings = rank(standings)
        self.decide()

    def standing(self, candidate: Candidate) -> Standing:
        deltas = []
        for search in self.searches:
            reference = search.selection.best_single
            assert reference is not None
            heldout = search.selection.heldout
            floor = self.selection.floors[search.task.name]
            deltas.append(
                task_delta(
                    search.task,
                    heldout[candidate.name],
                    heldout[reference.name],
                    reference.name,
                    floor,
                )
            )
        calls = [s.selection.heldout[candidate.name].per_request()["calls"] for s in self.searches]
        return Standing(candidate, tuple(deltas), sum(calls) / len(calls))

    def decide(self) -> None:
        selection = self.selection
        best = selection.best_single
        assert best is not None
        top = selection.standings[0]
        if top.qualifies and top.candidate != best:
            selection.recommended = top.candidate
            selection.verdict = (
                f"{top.candidate.name} meets the floor on all {len(self.searches)} tasks and "
                f"gains significantly on {top.wins} of them (mean Δ {top.mean_delta:+.1f} points)"
            )
        else:
            selection.recommended = best
            mixtures = [s for s in selection.standings if s.qualifies and s.candidate != best]
            if mixtures:
                selection.verdict = (
                    f"{best.name}, the single model best on average over the dev splits, ranks "
                    f"above every mixture that meets the floor on every task (the first, "
                    f"{mixtures[0].candidate.name}, gains significantly on {mixtures[0].wins} "
                    f"tasks, mean Δ {mixtures[0].mean_delta:+.1f} points); it is recommended"
                )
            else:
                chosen = selection.standing(selection.chosen)
                why = ""
                if chosen is not None and chosen.candidate != best:
                    below = ", ".join(chosen.below_floor())
                    why = f" ({chosen.candidate.name}, the best on dev, is below it on {below})"
                selection.verdict = (
                    f"no mixture meets the floor on every task{why}; the single model best on "
                    f"average over the dev splits, {best.name}, is recommended"
                )
            own = selection.standing(best)
            if own is not None and not own.qualifies:
                selection.verdict += (
                    f", though it is below the floor on {', '.join(own.below_floor())}"
                )
        for search in self.searches:
            search.selection.recommended = selection.recommended


async def run_multi_search(
    options: SearchOptions,
    tasks: Mapping[str, tuple[Evaluator, Sequence[EvalItem]]],
    floors: Mapping[str, float],
    *,
    log: Callable[[str], None] = lambda _: None,
    embedder: Embedder | None = None,
    limits: Mapping[str, int | None] | None = None,
    heldouts: Mapping[str, int] | None = None,
) -> MultiSelection:
    """Choose one configuration for every task in ``tasks`` (name: its evaluator and items).

    ``limits``: a task's own limit on the items its splits are carved from, in place of
    ``options.limit``; ``heldouts``: a task's own held-out size, in place of
    ``options.heldout``."""
    if len(options.pool) < 1:
        raise ConfigError("give at least one candidate model (--model)")
    if len(set(options.pool)) != len(options.pool):
        raise ConfigError("the pool names a model twice")
    searches = []
    for name, (evaluator, items) in tasks.items():
        try:
            limit = (limits or {}).get(name, options.limit)
            heldout = (heldouts or {}).get(name, options.heldout)
            splits = split_items(items, options.dev, heldout, options.seed, limit)
        except ConfigError as exc:
            raise ConfigError(f"--task {name}: {exc}") from None

        def task_log(text: str, name: str = name) -> None:
            log(f"{name}: {text}")

        searches.append(TaskSearch(options, evaluator.task, evaluator, splits, task_log, embedder))
    for evaluator, _ in tasks.values():
        evaluator.check(options.pool)
    return await _JointSearch(options, searches, floors, log).search()
