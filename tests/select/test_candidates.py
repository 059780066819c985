from __future__ import annotations

from moa.engine.spec import MixtureSpec
from moa.select.candidates import Budget, Candidate, ModelStats, Sampling

STATS = {
    "p:a": ModelStats(100, 200, 10.0),
    "p:b": ModelStats(100, 100, 2.0),
}


def test_specs_of_each_shape() -> None:
    sampling = Sampling(max_tokens=64, temperature=0.9, samples=3)
    single = Candidate("single", ("p:a",), "p:a").spec(sampling)
    assert not single.layers and single.aggregator.temperature == 0.0
    assert single.aggregator.seed == 0 and single.aggregator.max_tokens == 64
    vote = Candidate("vote", ("p:a",) * 3, "p:a").spec(sampling)
    options = vote.strategy.options()
    assert vote.strategy.type == "vote"
    assert options.samples == 3 and options.greedy_first  # type: ignore[attr-defined]
    assert options.temperature == 0.9  # type: ignore[attr-defined]
    mixed_vote = Candidate("vote", ("p:a", "p:b", "p:a"), "p:a").spec(sampling)
    assert mixed_vote.strategy.type == "vote" and len(mixed_vote.layers[0].agents) == 3
    moa = Candidate("moa", ("p:a", "p:b"), "p:b", layers=2).spec(sampling)
    assert len(moa.layers) == 2 and moa.aggregator.model == "p:b"
    assert moa.strategy.type == "layered"
    rank = Candidate("rank", ("p:a", "p:b"), "p:a").spec(sampling)
    assert rank.strategy.type == "rank"
    self_moa = Candidate("self-moa", ("p:b",) * 3, "p:a").spec(sampling)
    assert self_moa.strategy.type == "self-moa" and self_moa.aggregator.model == "p:a"


def test_names_are_distinct_and_readable() -> None:
    names = {
        Candidate("single", ("p:a",), "p:a").name,
        Candidate("vote", ("p:a",) * 3, "p:a").name,
        Candidate("self-moa", ("p:a",) * 3, "p:a").name,
        Candidate("self-moa", ("p:a",) * 3, "p:b").name,
        Candidate("moa", ("p:a", "p:b"), "p:a").name,
        Candidate("moa", ("p:a", "p:b"), "p:a", layers=2).name,
        Candidate("rank", ("p:a", "p:b"), "p:a").name,
    }
    assert len(names) == 7
    assert "moa [a, b] -> a" in names


def test_estimated_cost_and_budget() -> None:
    single = Candidate("single", ("p:b",), "p:b").estimated_cost(STATS)
    assert single == {"calls": 1.0, "tokens": 200.0, "latency_s": 2.0}
    vote = Candidate("vote", ("p:b",) * 4, "p:b").estimated_cost(STATS)
    assert vote["calls"] == 4 and vote["latency_s"] == 2.0
    moa = Candidate("moa", ("p:a", "p:b"), "p:b").estimated_cost(STATS)
    assert moa["calls"] == 3
    assert moa["latency_s"] > 10.0 + 2.0  # slowest proposer, then the aggregator
    two = Candidate("moa", ("p:a", "p:b"), "p:b", layers=2).estimated_cost(STATS)
    assert two["calls"] == 5 and two["tokens"] > moa["tokens"]
    assert Budget(max_calls=3).allows(moa) and not Budget(max_calls=2).allows(moa)
    assert not Budget(max_latency_s=5).allows(moa)
    assert Budget().describe() == "no limit"


def test_self_moa_makes_the_same_calls_as_the_eval_baseline() -> None:
    # moa eval's automatic Self-MoA and moa select's are one definition: every call
    # (samples and aggregation) is the same, so the call cache serves both.
    from moa import Mixture, ProviderRegistry
    from moa.eval.systems import GenerationSettings, self_moa_spec
    from moa.testing import FunctionProvider

    def made_calls(spec: MixtureSpec) -> list[str]:
        fake = FunctionProvider(lambda r: f"The answer is {r.params.seed}")
        Mixture(spec, ProviderRegistry().add("p", fake)).run("2+2?")
        return sorted(repr((c.model, c.messages, c.params)) for c in fake.calls)

    select_spec = Candidate("self-moa", ("p:a",) * 5, "p:a").spec(Sampling(samples=5))
    eval_spec = self_moa_spec("p:a", GenerationSettings(samples=5))
    calls = made_calls(select_spec)
    assert len(calls) == 6
    assert calls == made_calls(eval_spec)
