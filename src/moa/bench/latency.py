"""Time to first token and total time of the latency modes, side by side.

Four modes answer the same prompts in one run, round-robin so that any drift of
the machine hits them alike:

- ``single``: the aggregator model alone (the yardstick);
- ``standard``: the paper's MoA, one layer of proposers then the aggregator;
- ``chunked``: the same mixture with chunk-wise aggregation (strategy ``chunked``);
- ``quorum``: the same mixture aggregating once k of the n proposers answered.

By default the models are a fake OpenAI-compatible upstream on 127.0.0.1 (in a
child process, see :mod:`moa.bench.upstream`) reached through the real HTTP
provider: proposers stream at different token rates, the aggregator has its own
first-token delay and rate, all configurable. With ``local=True`` the same four
modes run a config's real models (the ``local`` preset by default) on a few prompts.
TTFT and total time are the median over the runs, and each is also given as a
ratio to the single model's.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from moa.config import build_mixture, load_config, parse_config
from moa.engine.events import Done, TextDelta
from moa.engine.mixture import Mixture
from moa.engine.strategy import get_strategy

__all__ = [
    "MODES",
    "LatencyReport",
    "ModeTiming",
    "UpstreamSetup",
    "command",
    "measure_latency",
    "measure_local",
]

MODES = ("single", "standard", "chunked", "quorum")
LABELS = {
    "single": "aggregator alone",
    "standard": "standard MoA",
    "chunked": "chunk-wise MoA",
    "quorum": "k-of-n MoA",
}
TARGET_TTFT_RATIO = 1.5
PROMPT = "Explain how a refrigerator keeps food cold."
LOCAL_PROMPTS = (
    "Explain how a refrigerator keeps food cold.",
    "A train travels 120 km in 1.5 hours. What is its average speed in km/h?",
    "Give three tips for writing clear commit messages.",
    "What is the difference between a list and a tuple in Python?",
    "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?",
)


@dataclass(frozen=True)
class UpstreamSetup:
    """The fake upstream: n proposers at evenly spread rates and one aggregator model."""

    proposers: int = 4
    proposal_tokens: int = 300
    min_rate: float = 30.0
    max_rate: float = 80.0
    proposer_first_token: float = 0.2
    aggregator_first_token: float = 0.8
    aggregator_rate: float = 50.0
    answer_tokens: int = 200

    def rates(self) -> list[float]:
        if self.proposers == 1:
            return [self.min_rate]
        step = (self.max_rate - self.min_rate) / (self.proposers - 1)
        return [self.min_rate + i * step for i in range(self.proposers)]

    def describe(self) -> str:
        rates = "/".join(f"{r:.0f}" for r in self.rates())
        return (
            f"fake upstream: {self.proposers} proposers at {rates} tok/s writing "
            f"{self.proposal_tokens} tokens, first token after {self.proposer_first_token:g}s; "
            f"aggregator first token after {self.aggregator_first_token:g}s, "
            f"{self.aggregator_rate:g} tok/s, {self.answer_tokens}-token answer"
        )


@dataclass(frozen=True)
class ModeTiming:
    """One answer of one mode."""

    ttft_s: float | None
    total_s: float
    calls: int
    output_chars: int


@dataclass
class LatencyReport:
    setup: str
    options: dict[str, Any]
    timings: dict[str, list[ModeTiming]] = field(default_factory=dict)

    def median_ttft(self, mode: str) -> float | None:
        values = [t.ttft_s for t in self.timings.get(mode, []) if t.ttft_s is not None]
        return statistics.median(values) if values else None

    def median_total(self, mode: str) -> float | None:
        values = [t.total_s for t in self.timings.get(mode, [])]
        return statistics.median(values) if values else None

    def ratio(self, mode: str, kind: str) -> float | None:
        measure = self.median_ttft if kind == "ttft" else self.median_total
        value, single = measure(mode), measure("single")
        return None if value is None or not single else value / single

    def to_dict(self) -> dict[str, Any]:
        modes = {}
        for mode, runs in self.timings.items():
            modes[mode] = {
                "label": LABELS[mode],
                "median_ttft_s": self.median_ttft(mode),
                "median_total_s": self.median_total(mode),
                "ttft_ratio_to_single": self.ratio(mode, "ttft"),
                "total_ratio_to_single": self.ratio(mode, "total"),
                "runs": [vars(t) for t in runs],
            }
        chunked = self.ratio("chunked", "ttft")
        return {
            "setup": self.setup,
            "options": self.options,
            "modes": modes,
            "target_chunked_ttft_ratio": TARGET_TTFT_RATIO,
            "target_met": None if chunked is None else chunked <= TARGET_TTFT_RATIO,
        }

    def format(self) -> str:
        runs = max((len(r) for r in self.timings.values()), default=0)
        options = ", ".join(f"{k}={v}" for k, v in self.options.items())
        lines = [
            self.setup,
            f"{options}; {runs} answer(s) per mode, medians",
            f"{'mode':<18}{'TTFT s':>9}{'x single':>10}{'total s':>10}{'x single':>10}{'calls':>7}",
        ]
        for mode in self.timings:
            calls = statistics.median(t.calls for t in self.timings[mode])
            lines.append(
                f"{LABELS[mode]:<18}{_num(self.median_ttft(mode)):>9}"
                f"{_num(self.ratio(mode, 'ttft')):>10}{_num(self.median_total(mode)):>10}"
                f"{_num(self.ratio(mode, 'total')):>10}{calls:>7g}"
            )
        chunked = self.ratio("chunked", "ttft")
        if chunked is not None:
            verdict = "met" if chunked <= TARGET_TTFT_RATIO else "NOT met"
            lines.append(
                f"target: chunk-wise TTFT <= {TARGET_TTFT_RATIO:g} x single: {verdict} "
                f"({chunked:.2f} x)"
            )
        return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def mode_mixtures(
    standard: Mixture, *, chunked: Mapping[str, Any], quorum: int | None
) -> dict[str, Mixture]:
    """The four modes from one mixture with one proposer layer (they share its providers).

    ``chunked`` holds the options of the chunk-wise strategy (e.g. ``chunk_tokens``).
    """
    agents = len(standard.spec.layers[-1].agents) if standard.spec.layers else 1
    k = quorum or max(1, agents // 2)
    single = Mixture(standard.spec.model_copy(update={"layers": []}), standard.providers)
    return {
        "single": single,
        "standard": standard,
        "chunked": standard.variant({"strategy": {"type": "chunked", **chunked}}),
        "quorum": standard.variant({"quorum": k}),
    }


async def _timed(mixture: Mixture, prompt: str) -> ModeTiming:
    started = time.perf_counter()
    ttft: float | None = None
    calls = chars = 0
    async for event in mixture.astream(prompt):
        if isinstance(event, TextDelta) and ttft is None and event.text:
            ttft = time.perf_counter() - started
        elif isinstance(event, Done):
            calls, chars = event.result.usage.calls, len(event.result.output)
    return ModeTiming(ttft, time.perf_counter() - started, calls, chars)


async def _measure(
    modes: dict[str, Mixture], prompts: Sequence[str], runs: int, warmup: bool
) -> dict[str, list[ModeTiming]]:
    timings: dict[str, list[ModeTiming]] = {mode: [] for mode in modes}
    try:
        if warmup:  # connections and client set-up are not what is measured
            await _timed(modes["single"], prompts[0])
        for _ in range(runs):
            for prompt in prompts:
                for mode, mixture in modes.items():
                    timings[mode].append(await _timed(mixture, prompt))
    finally:
        await modes["standard"].aclose()
    return timings


def _words(count: int, seed: str) -> str:
    return " ".join(f"{seed}{i}" for i in range(count))


def _upstream_config(base_url: str, setup: UpstreamSetup) -> dict[str, Any]:
    return {
        "name": "latency-bench",
        "providers": {
            "fake": {"base_url": base_url, "requires_key": False, "supports_continue": True}
        },
        "retry": {"max_attempts": 1},
        "layers": [[{"model": f"fake:proposer-{i + 1}"} for i in range(setup.proposers)]],
        "aggregator": {"model": "fake:aggregator"},
    }


def measure_latency(
    setup: UpstreamSetup | None = None,
    *,
    chunked: Mapping[str, Any] | None = None,
    quorum: int | None = None,
    runs: int = 3,
) -> LatencyReport:
    """Run the four modes against a fake upstream (started and stopped here)."""
    from moa.bench.upstream import ChildUpstream
    from moa.testing.openai_server import ModelBehavior

    setup = setup or UpstreamSetup()
    behaviors = {
        f"proposer-{i + 1}": ModelBehavior(
            text=_words(setup.proposal_tokens, f"p{i + 1}w"),
            first_token_delay=setup.proposer_first_token,
            tokens_per_second=rate,
        )
        for i, rate in enumerate(setup.rates())
    }
    behaviors["aggregator"] = ModelBehavior(
        text=_words(setup.answer_tokens, "a"),
        first_token_delay=setup.aggregator_first_token,
        tokens_per_second=setup.aggregator_rate,
    )
    with ChildUpstream(behaviors) as upstream:
        config = parse_config(_upstream_config(upstream.base_url, setup), "latency benchmark")
        chunked = dict(chunked or {})
        modes = mode_mixtures(build_mixture(config), chunked=chunked, quorum=quorum)
        timings = asyncio.run(_measure(modes, [PROMPT], runs, warmup=True))
    k = quorum or max(1, setup.proposers // 2)
    return LatencyReport(setup.describe(), _options(chunked, k, setup.proposers), timings)


def _options(chunked: Mapping[str, Any], k: int, n: int) -> dict[str, Any]:
    options = get_strategy("chunked").options.model_validate(dict(chunked))
    shown = {f"chunked.{key}": value for key, value in options.model_dump().items()}
    return {**shown, "quorum": f"{k} of {n}"}


def measure_local(
    source: str = "local",
    *,
    prompts: int = 3,
    chunked: Mapping[str, Any] | None = None,
    quorum: int | None = None,
    runs: int = 1,
) -> LatencyReport:
    """The four modes with a config's real models (one proposer layer is used: the last)."""
    config = load_config(source)
    if not config.layers:
        raise ValueError(f"config {source!r} has no proposer layer to compare against")
    config = config.model_copy(update={"layers": config.layers[-1:]})
    standard = build_mixture(config)
    chunked = dict(chunked or {})
    modes = mode_mixtures(standard, chunked=chunked, quorum=quorum)
    chosen = LOCAL_PROMPTS[: max(1, prompts)]
    timings = asyncio.run(_measure(modes, chosen, runs, warmup=False))
    agents = [a.model for a in config.layers[0].agents]
    setup = (
        f"{source}: proposers {', '.join(agents)}; aggregator {config.aggregator.model}; "
        f"{len(chosen)} prompt(s)"
    )
    k = quorum or max(1, len(agents) // 2)
    return LatencyReport(setup, _options(chunked, k, len(agents)), timings)


def command(
    runs: Annotated[
        int, typer.Option(min=1, help="Answers per mode (per prompt with --local).")
    ] = 3,
    chunk_tokens: Annotated[
        int | None,
        typer.Option(min=1, help="First chunk of the chunk-wise aggregator (default: 4 tokens)."),
    ] = None,
    first_chunk_tokens: Annotated[
        int | None,
        typer.Option(min=0, help="Proposer tokens before the aggregator starts (default: chunk)."),
    ] = None,
    start_quorum: Annotated[
        int | None,
        typer.Option(min=1, help="Start once this many proposers have a first chunk."),
    ] = None,
    quorum: Annotated[
        int | None, typer.Option(min=1, help="k of the k-of-n mode (default: half the layer).")
    ] = None,
    proposers: Annotated[int, typer.Option(min=1, help="Fake proposers.")] = 4,
    proposal_tokens: Annotated[int, typer.Option(min=1, help="Tokens each proposer writes.")] = 300,
    min_rate: Annotated[float, typer.Option(min=0.1, help="Slowest proposer, tok/s.")] = 30.0,
    max_rate: Annotated[float, typer.Option(min=0.1, help="Fastest proposer, tok/s.")] = 80.0,
    proposer_ttft: Annotated[
        float, typer.Option(min=0.0, help="Proposers' first-token delay, s.")
    ] = 0.2,
    aggregator_ttft: Annotated[
        float, typer.Option(min=0.0, help="Aggregator's first-token delay, s.")
    ] = 0.8,
    aggregator_rate: Annotated[float, typer.Option(min=0.1, help="Aggregator, tok/s.")] = 50.0,
    answer_tokens: Annotated[int, typer.Option(min=1, help="Tokens of the answer.")] = 200,
    local: Annotated[
        bool, typer.Option("--local", help="Use a config's real models instead of the fake.")
    ] = False,
    config: Annotated[str, typer.Option(help="With --local: config file or preset.")] = "local",
    prompts: Annotated[int, typer.Option(min=1, help="With --local: how many prompts.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """TTFT and total time: aggregator alone, standard, chunk-wise and k-of-n MoA."""
    chunked: dict[str, Any] = {}
    if chunk_tokens is not None:
        chunked["chunk_tokens"] = chunk_tokens
    if first_chunk_tokens is not None:
        chunked["first_chunk_tokens"] = first_chunk_tokens
    if start_quorum is not None:
        chunked["start_quorum"] = start_quorum
    if local:
        report = measure_local(config, prompts=prompts, chunked=chunked, quorum=quorum, runs=runs)
    else:
        setup = UpstreamSetup(
            proposers=proposers,
            proposal_tokens=proposal_tokens,
            min_rate=min_rate,
            max_rate=max_rate,
            proposer_first_token=proposer_ttft,
            aggregator_first_token=aggregator_ttft,
            aggregator_rate=aggregator_rate,
            answer_tokens=answer_tokens,
        )
        report = measure_latency(setup, chunked=chunked, quorum=quorum, runs=runs)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.format())
