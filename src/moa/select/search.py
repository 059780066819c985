"""``moa select``: measure the pool, search configurations under a budget, check on held-out data.

1. Carve the data (shuffled with ``seed``) into a dev split and a disjoint held-out split.
2. Answer the dev items with each model alone (greedy); measure cost and pairwise diversity.
3. Draw samples of the best models (a vote over them is a configuration of its own).
4. Enumerate configurations — proposer subsets and aggregators (MoA), Self-MoA,
   votes, the ranker — keep those whose estimated cost fits the budget, order
   them by a free estimate from the answers already cached (the better of the
   aggregator alone and the vote, plus part of the headroom up to the oracle),
   and run the most promising on the dev items.
5. The best configuration on dev, a few runners-up, every single model and the
   Self-MoA of the best model answer the held-out items. The chosen
   configuration is recommended only if it beats the best single model (the
   best on dev) there; otherwise that single model is.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from moa.errors import ConfigError
from moa.eval.datasets import EvalItem
from moa.eval.scorers import majority_vote
from moa.eval.tasks import Task
from moa.select.candidates import Budget, Candidate, ModelStats, Sampling
from moa.select.diversity import Embedder, PairDiversity, pair_diversity
from moa.select.evaluate import Evaluation, Evaluator

__all__ = [
    "DEFAULT_HELDOUT",
    "SearchOptions",
    "Selection",
    "TaskSearch",
    "Tried",
    "cost_text",
    "enumerate_candidates",
    "routed_candidates",
    "run_search",
    "split_items",
]

HEADROOM_SHARE = 0.3
"""Part of the gap up to the oracle that an aggregator is assumed to close (ordering only)."""


DEFAULT_HELDOUT = 50
"""Held-out items per task when ``--heldout`` does not say."""


@dataclass(frozen=True)
class SearchOptions:
    pool: tuple[str, ...]
    budget: Budget = field(default_factory=Budget)
    sampling: Sampling = field(default_factory=Sampling)
    dev: int = 30
    heldout: int = DEFAULT_HELDOUT
    seed: int = 0
    limit: int | None = None
    """Carve the splits from the first ``limit`` items only (all items when None)."""
    sample_models: int = 1
    """How many of the best models get samples (for votes and Self-MoA)."""
    max_proposers: int = 3
    max_layers: int = 1
    max_evals: int = 4
    """Configurations that need new aggregator calls, tried on dev beyond the baselines."""
    finalists: int = 2
    """Configurations (besides the baselines) that also answer the held-out items."""


@dataclass
class Tried:
    """A configuration run on dev: its measurements, estimate and standing."""

    candidate: Candidate
    dev: Evaluation
    estimated: dict[str, float]
    proxy: float | None
    within_budget: bool

    @property
    def measured(self) -> dict[str, float]:
        return self.dev.per_request()


@dataclass
class Selection:
    """Everything the search found; :mod:`moa.select.report` turns it into a report."""

    options: SearchOptions
    task: str
    dev_ids: list[str]
    heldout_ids: list[str]
    tried: list[Tried] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    diversity: list[PairDiversity] = field(default_factory=list)
    heldout: dict[str, Evaluation] = field(default_factory=dict)
    best_single: Candidate | None = None
    """The best single model on dev (its Self-MoA is the other baseline)."""
    heldout_best_single: Candidate | None = None
    self_moa: Candidate | None = None
    chosen: Candidate | None = None
    """The best configuration on dev within the budget."""
    recommended: Candidate | None = None
    verdict: str = ""

    def tried_by_name(self) -> dict[str, Tried]:
        return {t.candidate.name: t for t in self.tried}


def split_items(
    items: Sequence[EvalItem], dev: int, heldout: int, seed: int, limit: int | None = None
) -> tuple[list[EvalItem], list[EvalItem]]:
    """A shuffled dev split and a disjoint held-out split after it, from the first ``limit``."""
    if dev < 1 or heldout < 1:
        raise ConfigError("--dev and --heldout must both be at least 1")
    if limit is not None and limit < 1:
        raise ConfigError("--limit must be at least 1")
    order = list(items[:limit])
    if dev + heldout > len(order):
        size = f"the first {limit} of {len(items)}" if len(order) < len(items) else len(items)
        raise ConfigError(
            f"the data has {size} items, fewer than --dev {dev} + --heldout {heldout}"
        )
    random.Random(seed).shuffle(order)
    return order[:dev], order[dev : dev + heldout]


class TaskSearch:
    """The search on one task: its splits, measurements and trials (``Selection``)."""

    def __init__(
        self,
        options: SearchOptions,
        task: Task,
        evaluator: Evaluator,
        items: tuple[list[EvalItem], list[EvalItem]],
        log: Callable[[str], None],
        embedder: Embedder | None,
    ) -> None:
        self.options = options
        self.task = task
        self.evaluator = evaluator
        self.dev_items, self.heldout_items = items
        self.log = log
        self.embedder = embedder
        self.selection = Selection(
            options, task.name, [i.id for i in self.dev_items], [i.id for i in self.heldout_items]
        )
        self.stats: dict[str, ModelStats] = {}
        # (model, sample index) -> per dev item: (extracted answer, correct)
        self.answers: dict[tuple[str, int], list[tuple[str | None, bool]]] = {}
        self.exact = task.kind == "exact"
        self.answer_kind = "choice" if task.name == "mmlu" else "number"

    @property
    def route_kind(self) -> str | None:
        """The kind of request the task asks, as routing tells them apart (None: neither
        counted nor checked, e.g. judged answers)."""
        if self.task.kind == "code":
            return "code"
        return self.answer_kind if self.exact else None

    # -- running on dev ---------------------------------------------------------------------

    async def try_on_dev(self, candidate: Candidate, proxy: float | None = None) -> Tried:
        known = self.selection.tried_by_name().get(candidate.name)
        if known is not None:
            return known
        self.log(f"dev: {candidate.name}")
        spec = candidate.spec(self.options.sampling)
        evaluation = await self.evaluator.evaluate(candidate.name, spec, self.dev_items)
        measured = all(m in self.stats for m in (*candidate.proposers, candidate.aggregator))
        estimated: dict[str, float] = candidate.estimated_cost(self.stats) if measured else {}
        tried = Tried(candidate, evaluation, estimated, proxy, True)
        tried.within_budget = self.options.budget.allows(tried.measured)
        self.selection.tried.append(tried)
        self.log(f"  {evaluation.mean:.3f} on {len(self.dev_items)} dev items")
        return tried

    def record_answers(self, model: str, evaluation: Evaluation, *, samples: bool) -> None:
        if not self.exact:
            return
        outcomes = evaluation.by_item()
        if not samples:
            self.answers[(model, 0)] = [
                (outcomes[i.id].answer, bool(outcomes[i.id].score)) for i in self.dev_items
            ]
            return
        for item_index, item in enumerate(self.dev_items):
            for sample, (_, output) in enumerate(outcomes[item.id].proposals):
                extracted = self.evaluator.extract(item, output)
                self.answers.setdefault((model, sample), [(None, False)] * len(self.dev_items))
                self.answers[(model, sample)][item_index] = extracted

    async def measure_singles(self) -> list[str]:
        """Each model alone; returns the pool ordered best first."""
        means: dict[str, float] = {}
        for model in self.options.pool:
            tried = await self.try_on_dev(Candidate("single", (model,), model))
            outcomes = tried.dev.outcomes
            n = max(len(outcomes), 1)
            self.stats[model] = ModelStats(
                sum(o.usage.prompt_tokens for o in outcomes) / n,
                sum(o.usage.completion_tokens for o in outcomes) / n,
                sum(o.latency_s for o in outcomes) / n,
            )
            means[model] = tried.dev.mean
            self.record_answers(model, tried.dev, samples=False)
        for tried in self.selection.tried:
            tried.estimated = tried.candidate.estimated_cost(self.stats)
        return sorted(self.options.pool, key=lambda m: (-means[m], self.stats[m].latency_s))

    def measure_diversity(self) -> None:
        singles = {t.candidate.aggregator: t.dev for t in self.selection.tried}
        for a, b in itertools.combinations(self.options.pool, 2):
            out_a = [singles[a].by_item()[i.id].output for i in self.dev_items]
            out_b = [singles[b].by_item()[i.id].output for i in self.dev_items]
            answers = correct = None
            if self.exact:
                answers = (
                    [x for x, _ in self.answers[(a, 0)]],
                    [x for x, _ in self.answers[(b, 0)]],
                )
                correct = (
                    [c for _, c in self.answers[(a, 0)]],
                    [c for _, c in self.answers[(b, 0)]],
                )
            self.selection.diversity.append(
                pair_diversity(
                    a, b, out_a, out_b, answers=answers, correct=correct, embedder=self.embedder
                )
            )

    # -- the free estimate ------------------------------------------------------------------

    def _accuracy(self, model: str) -> float:
        return sum(c for _, c in self.answers[(model, 0)]) / max(len(self.dev_items), 1)

    def _pool_estimates(self, draws: Sequence[tuple[str, int]]) -> tuple[float, float] | None:
        """Vote accuracy and oracle of these answers on dev (``None``: not all known yet)."""
        if not all(d in self.answers for d in draws):
            return None
        vote_right = oracle = 0
        for index, item in enumerate(self.dev_items):
            found = [self.answers[d][index] for d in draws]
            winner = majority_vote([answer for answer, _ in found])
            vote_right += self.task.matches(item, winner)
            oracle += any(correct for _, correct in found)
        n = max(len(self.dev_items), 1)
        return vote_right / n, oracle / n

    def proxy(self, candidate: Candidate) -> float | None:
        if candidate.kind == "routed" and self.route_kind not in candidate.routes:
            return self._accuracy(candidate.aggregator) if self.exact else None
        if not self.exact:
            return None
        draws = _draws(candidate)
        estimates = self._pool_estimates(draws)
        if estimates is None:
            return None
        vote, oracle = estimates
        if candidate.kind in ("vote", "routed"):
            return vote
        base = max(self._accuracy(candidate.aggregator), vote)
        share = HEADROOM_SHARE / 2 if candidate.kind == "rank" else HEADROOM_SHARE
        return base + share * (oracle - base)

    # -- the search -------------------------------------------------------------------------

    def enumerate(self, ranked: Sequence[str], sampled: Sequence[str]) -> list[Candidate]:
        vote = self.answer_kind if self.exact else None
        return enumerate_candidates(self.options, ranked, sampled, vote)

    async def search(self) -> Selection:
        selection = self.selection
        ranked = await self.measure_singles()
        best = Candidate("single", (ranked[0],), ranked[0])
        selection.best_single = best
        self.log(f"best single model on dev: {ranked[0]}")
        self.measure_diversity()
        sampled = ranked[: max(self.options.sample_models, 1)]
        n = self.options.sampling.samples
        selection.self_moa = Candidate("self-moa", (ranked[0],) * n, ranked[0])
        for model in sampled:
            first = (
                Candidate("vote", (model,) * n, model, answer=self.answer_kind)
                if self.exact
                else Candidate("self-moa", (model,) * n, model)
            )
            tried = await self.try_on_dev(first, self.proxy(first))
            self.record_answers(model, tried.dev, samples=True)
        for candidate in routed_candidates(self.options, sampled, [self.route_kind]):
            await self.try_on_dev(candidate, self.proxy(candidate))
        await self.try_on_dev(selection.self_moa, self.proxy(selection.self_moa))
        pending = []
        for candidate in self.enumerate(ranked, sampled):
            if candidate.name in selection.tried_by_name():
                continue
            cost = candidate.estimated_cost(self.stats)
            if not self.options.budget.allows(cost):
                selection.skipped.append((candidate.name, f"over budget (est. {cost_text(cost)})"))
                continue
            pending.append((candidate, self.proxy(candidate), cost))
        pending.sort(key=lambda c: (-(c[1] if c[1] is not None else -1.0), c[2]["calls"]))
        for candidate, proxy, _ in pending[: self.options.max_evals]:
            await self.try_on_dev(candidate, proxy)
        for candidate, proxy, _ in pending[self.options.max_evals :]:
            shown = "" if proxy is None else f", estimate {proxy:.3f}"
            selection.skipped.append((candidate.name, f"not tried (max evals{shown})"))
        await self.check_heldout(ranked)
        return selection

    async def answer_heldout(self, candidate: Candidate) -> Evaluation:
        self.log(f"held-out: {candidate.name}")
        spec = candidate.spec(self.options.sampling)
        evaluation = await self.evaluator.evaluate(candidate.name, spec, self.heldout_items)
        self.selection.heldout[candidate.name] = evaluation
        self.log(f"  {evaluation.mean:.3f} on {len(self.heldout_items)} held-out items")
        return evaluation

    async def check_heldout(self, ranked: Sequence[str]) -> None:
        selection = self.selection
        eligible = [t for t in selection.tried if t.within_budget]
        if not eligible:
            raise ConfigError(
                "no configuration fits the budget, not even a single model; raise the budget"
            )
        eligible.sort(key=lambda t: (-t.dev.mean, t.measured["calls"]))
        selection.chosen = eligible[0].candidate
        finalists = [t.candidate for t in eligible if t.candidate.kind != "single"]
        finalists = finalists[: self.options.finalists]
        assert selection.self_moa is not None
        wanted = [Candidate("single", (m,), m) for m in ranked] + [selection.self_moa, *finalists]
        if selection.chosen not in wanted:
            wanted.append(selection.chosen)
        for candidate in dict.fromkeys(wanted):
            await self.answer_heldout(candidate)
        singles = [Candidate("single", (m,), m) for m in ranked]
        top_single = max(singles, key=lambda c: selection.heldout[c.name].mean)
        selection.heldout_best_single = top_single
        # The reference is the best single model as chosen on dev: picking the single
        # model by its held-out score would make the held-out split a second dev split.
        reference = selection.best_single
        assert reference is not None
        chosen_score = selection.heldout[selection.chosen.name].mean
        single_score = selection.heldout[reference.name].mean
        if selection.chosen.kind == "single":
            selection.recommended = selection.chosen
            selection.verdict = "the best configuration on dev is a single model"
        elif chosen_score > single_score:
            selection.recommended = selection.chosen
            selection.verdict = (
                f"{selection.chosen.name} beats the best single model on held-out by "
                f"{(chosen_score - single_score) * 100:.1f} points"
            )
        else:
            selection.recommended = reference
            selection.verdict = (
                f"nothing beat the best single model on held-out: {selection.chosen.name} "
                f"scored {chosen_score:.3f} against {single_score:.3f}; the single model is "
                "recommended"
            )
        top_score = selection.heldout[top_single.name].mean
        if top_single != reference and top_score > single_score:
            selection.verdict += (
                f" (caution: {top_single.name} scored {top_score:.3f} on held-out against "
                f"{single_score:.3f} for {reference.name}, the best single model on dev; "
                "a larger --heldout tells whether that is more than noise)"
            )


def enumerate_candidates(
    options: SearchOptions, ranked: Sequence[str], sampled: Sequence[str], vote: str | None
) -> list[Candidate]:
    """Every configuration of the pool the search considers, models ordered best first.

    ``vote`` is what votes compare (``number``, ``choice``, or ``auto``, which only
    votes over one model's samples); ``None``: no votes (tasks without exact answers).
    """
    n = options.sampling.samples
    aggregators = list(ranked[:2])
    found: list[Candidate] = []
    for model in sampled:
        if vote is not None:
            found.append(Candidate("vote", (model,) * n, model, answer=vote))
        for aggregator in dict.fromkeys([model, ranked[0]]):
            found.append(Candidate("self-moa", (model,) * n, aggregator))
    for size in range(2, min(options.max_proposers, len(ranked)) + 1):
        for subset in itertools.combinations(ranked, size):
            for aggregator in aggregators:
                for layers in range(1, options.max_layers + 1):
                    found.append(Candidate("moa", subset, aggregator, layers))
            found.append(Candidate("rank", subset, ranked[0]))
            if vote is not None and vote != "auto" and size >= 3:
                found.append(Candidate("vote", subset, ranked[0], answer=vote))
    return found


ROUTE_ORDER = ("number", "choice", "code")


def routed_candidates(
    options: SearchOptions, sampled: Sequence[str], kinds: Sequence[str | None]
) -> list[Candidate]:
    """Routed configurations over the tasks' kinds of request (``kinds``, one per task).

    One per sampled model and non-empty subset of the kinds that can be voted on or
    checked: it votes (or checks code) only on requests of those kinds and answers
    everything else with the greedy answer alone, so the selection can find out on
    which kinds spending more pays. None where a plain vote is the same thing (every
    task asks for one countable kind), or where no task's kind can be routed.
    """
    routable = [k for k in ROUTE_ORDER if k in kinds]
    if not routable or (len(set(kinds)) == 1 and routable != ["code"]):
        return []
    n = options.sampling.samples
    return [
        Candidate("routed", (model,) * n, model, routes=subset)
        for model in sampled
        for size in range(len(routable), 0, -1)
        for subset in itertools.combinations(routable, size)
    ]


def _draws(candidate: Candidate) -> list[tuple[str, int]]:
    if len(set(candidate.proposers)) == 1 and len(candidate.proposers) > 1:
        return [(candidate.proposers[0], i) for i in range(len(candidate.proposers))]
    return [(m, 0) for m in candidate.proposers]


def cost_text(cost: dict[str, float]) -> str:
    return f"{cost['calls']:.0f} calls, {cost['tokens']:.0f} tokens, {cost['latency_s']:.1f} s"


async def run_search(
    options: SearchOptions,
    task: Task,
    evaluator: Evaluator,
    items: Sequence[EvalItem],
    *,
    log: Callable[[str], None] = lambda _: None,
    embedder: Embedder | None = None,
) -> Selection:
    """Run the whole selection (see the module docstring)."""
    if len(options.pool) < 1:
        raise ConfigError("give at least one candidate model (--model)")
    if len(set(options.pool)) != len(options.pool):
        raise ConfigError("the pool names a model twice")
    splits = split_items(items, options.dev, options.heldout, options.seed, options.limit)
    evaluator.check(options.pool)
    return await TaskSearch(options, task, evaluator, splits, log, embedder).search()
