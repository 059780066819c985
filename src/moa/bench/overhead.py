"""Orchestration overhead: wall time of a mixture over its critical path.

A layers × agents mixture runs against a :class:`~moa.testing.FakeOpenAIServer`
on 127.0.0.1 (in a child process, see :mod:`moa.bench.upstream`) whose every
call takes a fixed time, through the real HTTP provider. The critical path of
a run is the sum, over layers, of the slowest call of that layer, plus the
aggregator's call, each as long as the upstream itself spent on it (its
handler's own duration, so HTTP, SDK and engine costs all count as overhead).
The ratio wall / critical path is 1.0 for an engine that adds nothing. The
first run (HTTP client creation, TCP connects) is reported apart from the
median of the warm runs. As in ``moa run``, every run is recorded in a run
history (a temporary one) and traced when ``OTEL_*`` asks for it, unless
``history=False``.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from moa.config import build_mixture, parse_config
from moa.history import HistorySettings, RunLog
from moa.tracing import Tracing
from moa.types import Message

if TYPE_CHECKING:
    from moa.bench.upstream import ChildUpstream
    from moa.testing.openai_server import RequestRecord

__all__ = ["OverheadReport", "OverheadRun", "command", "measure_overhead"]

TARGET_RATIO = 1.03
PROMPT = "Explain in two sentences why the sky is blue."
AGGREGATOR = "aggregator"


@dataclass(frozen=True)
class OverheadRun:
    """One run: its wall time and its critical path as the upstream measured it."""

    wall_s: float
    critical_path_s: float
    layer_slowest_s: tuple[float, ...]
    aggregator_s: float

    @property
    def ratio(self) -> float:
        return self.wall_s / self.critical_path_s if self.critical_path_s else float("inf")


@dataclass(frozen=True)
class OverheadReport:
    layers: int
    agents: int
    latency_s: float
    cold: OverheadRun
    runs: tuple[OverheadRun, ...] = field(default_factory=tuple)
    load: tuple[float, int] | None = None
    """The machine's 1-minute load average before the runs, and its number of CPUs."""
    history_runs: int | None = None
    """Runs written to the run history (``None``: history off)."""
    traced: bool = False

    @property
    def configured_critical_path_s(self) -> float:
        return (self.layers + 1) * self.latency_s

    @property
    def wall_s(self) -> float:
        return statistics.median(r.wall_s for r in self.runs)

    @property
    def critical_path_s(self) -> float:
        return statistics.median(r.critical_path_s for r in self.runs)

    @property
    def ratio(self) -> float:
        """Median over the warm runs of wall / critical path."""
        return statistics.median(r.ratio for r in self.runs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "agents": self.agents,
            "latency_s": self.latency_s,
            "calls_per_run": self.layers * self.agents + 1,
            "configured_critical_path_s": self.configured_critical_path_s,
            "median_wall_s": self.wall_s,
            "median_critical_path_s": self.critical_path_s,
            "median_ratio": self.ratio,
            "target_ratio": TARGET_RATIO,
            "cold": {**asdict(self.cold), "ratio": self.cold.ratio},
            "runs": [{**asdict(r), "ratio": r.ratio} for r in self.runs],
            "load_average_1m": None if self.load is None else self.load[0],
            "cpus": None if self.load is None else self.load[1],
            "history_runs": self.history_runs,
            "traced": self.traced,
        }

    def format(self) -> str:
        verdict = "met" if self.ratio <= TARGET_RATIO else "NOT met"
        lines = [
            f"mixture: {self.layers} layers x {self.agents} agents + aggregator "
            f"({self.layers * self.agents + 1} HTTP calls), {self.latency_s:g}s per call",
            f"warm runs: {len(self.runs)} (median)",
            f"  wall time        {self.wall_s:.4f} s",
            f"  critical path    {self.critical_path_s:.4f} s "
            f"(configured {self.configured_critical_path_s:.4f} s)",
            f"  wall / critical  {self.ratio:.4f}  (target <= {TARGET_RATIO}: {verdict})",
            f"  overhead         {(self.wall_s - self.critical_path_s) * 1000:.1f} ms per run",
            f"cold first run: wall {self.cold.wall_s:.4f} s, ratio {self.cold.ratio:.4f}",
            "run history: "
            + ("off" if self.history_runs is None else f"on, {self.history_runs} run(s) written")
            + f"; OpenTelemetry {'on' if self.traced else 'off'}",
        ]
        if self.load is not None:
            lines.append(f"machine: load average {self.load[0]:.2f} on {self.load[1]} CPUs")
        return "\n".join(lines)


def _config(base_url: str, layers: int, agents: int) -> dict[str, Any]:
    return {
        "name": "overhead-bench",
        "providers": {"fake": {"base_url": base_url, "requires_key": False}},
        "layers": [
            [{"model": f"fake:l{n}-a{i}"} for i in range(1, agents + 1)]
            for n in range(1, layers + 1)
        ],
        "aggregator": {"model": f"fake:{AGGREGATOR}"},
    }


def _critical_path(records: list[RequestRecord], layers: int, wall_s: float) -> OverheadRun:
    slowest = []
    for n in range(1, layers + 1):
        durations = [r.duration for r in records if r.model.startswith(f"l{n}-")]
        slowest.append(max(durations, default=0.0))
    aggregator = max((r.duration for r in records if r.model == AGGREGATOR), default=0.0)
    return OverheadRun(wall_s, sum(slowest) + aggregator, tuple(slowest), aggregator)


async def _measure(
    upstream: ChildUpstream, layers: int, agents: int, runs: int, log: RunLog
) -> list[OverheadRun]:
    mixture = build_mixture(parse_config(_config(upstream.base_url, layers, agents), "benchmark"))
    mixture.check()  # imports the provider module and resolves ids: not part of any run
    measured: list[OverheadRun] = []
    messages = (Message("user", PROMPT),)
    try:
        for _ in range(runs + 1):
            first = len(upstream.records())
            started = time.perf_counter()
            capture = log.start(mixture.spec, messages, source="cli")
            async for event in mixture.astream(messages, trace_id=capture.trace_id):
                capture.observe(event)
            log.submit(capture.finish())
            wall = time.perf_counter() - started
            measured.append(_critical_path(upstream.records()[first:], layers, wall))
    finally:
        await mixture.aclose()
    return measured


def measure_overhead(
    layers: int = 3, agents: int = 4, latency: float = 0.2, runs: int = 5, history: bool = True
) -> OverheadReport:
    """Run the benchmark (starts and stops its own fake upstream)."""
    from moa.bench.upstream import ChildUpstream
    from moa.testing.openai_server import ModelBehavior

    if layers < 1 or agents < 1 or runs < 1 or latency <= 0:
        raise ValueError("layers, agents and runs must be at least 1 and latency positive")
    behavior = ModelBehavior(
        text="The sky looks blue because air scatters short wavelengths most.", latency=latency
    )
    with ChildUpstream(default=behavior) as upstream, tempfile.TemporaryDirectory() as folder:
        settings = HistorySettings(Path(folder) / "history.sqlite") if history else None
        log = RunLog(settings, Tracing.from_env())
        load = _load()
        try:
            measured = asyncio.run(_measure(upstream, layers, agents, runs, log))
        finally:
            log.close()
        written = log.written if history else None
    return OverheadReport(
        layers,
        agents,
        latency,
        measured[0],
        tuple(measured[1:]),
        load,
        written,
        log.tracing is not None,
    )


def _load() -> tuple[float, int] | None:
    """Other work on the machine shows up as overhead; the report says how busy it was."""
    try:
        return os.getloadavg()[0], os.cpu_count() or 1
    except (AttributeError, OSError):  # not on every platform
        return None


def command(
    layers: Annotated[int, typer.Option(min=1, help="Proposer layers.")] = 3,
    agents: Annotated[int, typer.Option(min=1, help="Agents per layer.")] = 4,
    latency: Annotated[float, typer.Option(min=0.001, help="Seconds every call takes.")] = 0.2,
    runs: Annotated[int, typer.Option(min=1, help="Warm runs (after one cold run).")] = 5,
    history: Annotated[
        bool,
        typer.Option(
            "--history/--no-history",
            help="Record every run in a run history (a temporary one), as moa run does.",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Orchestration overhead: wall time / critical path against a fixed-latency upstream."""
    report = measure_overhead(layers, agents, latency, runs, history)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.format())
