"""``moa bench batch``: throughput of ``moa batch`` on the local engine and on Ray, side by side.

Both engines answer the same Batch API file through the same mixture against
a fake OpenAI-compatible upstream in its own process, whose every call takes a
fixed time. By default every run has the same number of requests in flight
(``--concurrency``, split evenly over the Ray actors), which compares the
engines; with ``--per-actor`` each actor has that many, so adding actors adds
work in flight, which measures how Ray scales. ``--nodes`` runs Ray on a
multi-node test cluster on this machine (``ray.cluster_utils.Cluster``), and
``--upstream-limit`` caps the calls the upstream serves at once, as a real
server's slots do. Ray's start-up is timed apart from the job.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["BatchBenchRow", "command", "run_bench"]


@dataclass(frozen=True)
class BatchBenchRow:
    engine: str
    requests: int
    in_flight: int
    actors: int | None
    wall_s: float
    requests_per_s: float
    startup_s: float = 0.0
    nodes: int = 1
    steady_per_s: float = 0.0
    """Requests/s from the first answer to the last: without starting the pool of actors."""


class _Clock:
    """A batch observer that notes when the first and the last answers arrived."""

    def __init__(self) -> None:
        self.first = self.last = 0.0
        self.count = 0

    def start(self, total: int, resumed: int) -> None:
        pass

    def advance(self, summary: Any) -> None:
        self.last = time.perf_counter()
        if self.count == 0:
            self.first = self.last
        self.count += 1

    def rate(self) -> float:
        span = self.last - self.first
        return (self.count - 1) / span if self.count > 1 and span > 0 else 0.0


def _config(base_url: str, agents: int) -> dict[str, Any]:
    return {
        "name": "bench-batch",
        "providers": {"upstream": {"base_url": base_url, "requires_key": False}},
        "layers": [{"agents": [{"model": f"upstream:p{n}"} for n in range(agents)]}],
        "aggregator": {"model": "upstream:agg"},
    }


def _requests(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for n in range(count):
            body = {"model": "any", "messages": [{"role": "user", "content": f"question {n}"}]}
            line = {"custom_id": f"q{n}", "method": "POST", "url": "/v1/chat/completions"}
            handle.write(json.dumps({**line, "body": body}) + "\n")


@contextlib.contextmanager
def _ray_session(nodes: int) -> Iterator[None]:
    """Ray on this machine: one node as ``moa batch`` starts it, or a test cluster of ``nodes``.

    Every node of the test cluster is a separate raylet with its own worker
    processes; Ray Data spreads the actors over them. Unlike ``moa batch``'s own
    Ray, the test cluster listens on the machine's address: a driver joining a
    cluster at 127.0.0.1 is sent to that address by Ray.
    """
    from moa.batch.ray_engine import _ray, start_ray

    ray = _ray()
    if nodes <= 1:
        start_ray()
        try:
            yield
        finally:
            ray.shutdown()
        return
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    node: dict[str, Any] = {"num_cpus": 2}
    cluster: Any = Cluster(
        initialize_head=True, head_node_args={**node, "include_dashboard": False}
    )
    try:
        for _ in range(nodes - 1):
            cluster.add_node(**node)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()
    finally:
        cluster.shutdown()


def run_bench(
    requests: int,
    latency: float,
    agents: int,
    concurrency: int,
    actors: list[int],
    *,
    per_actor: int | None = None,
    nodes: int = 1,
    upstream_limit: int | None = None,
    local: bool = True,
) -> list[BatchBenchRow]:
    """Run the local engine once (unless not ``local``) and Ray once per entry of ``actors``.

    Each Ray actor has ``per_actor`` requests in flight, or ``concurrency`` split over the actors.
    """
    from moa.batch import BatchOptions, ConfigMixture, LocalEngine, RayEngine, run_batch
    from moa.bench.upstream import ChildUpstream
    from moa.config import parse_config
    from moa.testing.openai_server import ModelBehavior

    rows: list[BatchBenchRow] = []
    behavior = ModelBehavior(text="a fixed answer of a few words", latency=latency)
    upstream = ChildUpstream(default=behavior, max_concurrent=upstream_limit)
    with upstream, tempfile.TemporaryDirectory() as folder:
        config = parse_config(_config(upstream.base_url, agents))
        factory = ConfigMixture(config, cache=None)
        source = Path(folder) / "requests.jsonl"
        _requests(source, requests)
        if local:
            clock = _Clock()
            summary = run_batch(
                BatchOptions(source, Path(folder) / "local.jsonl"),
                factory,
                LocalEngine(concurrency),
                clock,
            )
            rows.append(
                BatchBenchRow(
                    "local",
                    requests,
                    concurrency,
                    None,
                    summary.wall_s,
                    requests / summary.wall_s,
                    steady_per_s=clock.rate(),
                )
            )
        started = time.perf_counter()
        with _ray_session(nodes):
            startup = time.perf_counter() - started
            for count in actors:
                each = per_actor or max(1, concurrency // count)
                engine = RayEngine(actors=count, concurrency=each, actor_cpus=0.25)
                output = Path(folder) / f"ray-{count}.jsonl"
                clock = _Clock()
                summary = run_batch(BatchOptions(source, output), factory, engine, clock)
                rows.append(
                    BatchBenchRow(
                        "ray",
                        requests,
                        each * count,
                        count,
                        summary.wall_s,
                        requests / summary.wall_s,
                        startup,
                        nodes,
                        clock.rate(),
                    )
                )
    return rows


def command(
    requests: Annotated[int, typer.Option(min=1, help="Requests in the batch.")] = 200,
    latency: Annotated[
        float, typer.Option(min=0.0, help="Seconds every upstream call takes.")
    ] = 1.0,
    agents: Annotated[int, typer.Option(min=1, help="Proposers (plus one aggregator).")] = 3,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Requests in flight in all (split over Ray's actors).")
    ] = 32,
    actors: Annotated[
        list[int] | None, typer.Option(help="Ray actor counts to measure (repeatable).")
    ] = None,
    per_actor: Annotated[
        int | None,
        typer.Option(min=1, help="Requests in flight per Ray actor (instead of --concurrency)."),
    ] = None,
    nodes: Annotated[
        int,
        typer.Option(min=1, help="Ray on a test cluster of this many nodes on this machine."),
    ] = 1,
    upstream_limit: Annotated[
        int | None,
        typer.Option(min=1, help="Calls the fake upstream serves at once (more wait)."),
    ] = None,
    no_local: Annotated[
        bool, typer.Option("--no-local", help="Skip the --engine local run.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Measure requests per second of moa batch: --engine local, then --engine ray."""
    rows = run_bench(
        requests,
        latency,
        agents,
        concurrency,
        actors or [2],
        per_actor=per_actor,
        nodes=nodes,
        upstream_limit=upstream_limit,
        local=not no_local,
    )
    if as_json:
        typer.echo(json.dumps([asdict(row) for row in rows], indent=2))
        return
    local = rows[0].requests_per_s if rows[0].engine == "local" else None
    split = f"{per_actor} in flight per actor" if per_actor else f"{concurrency} in flight"
    typer.echo(
        f"{requests} requests, {agents} proposers + aggregator, {latency:g}s per call, {split}"
        + (f", Ray on {nodes} nodes" if nodes > 1 else "")
    )
    if upstream_limit is not None and latency > 0:
        bound = upstream_limit / (latency * (agents + 1))
        typer.echo(
            f"upstream: at most {upstream_limit} calls at once, so at most {bound:.1f} requests/s"
        )
    typer.echo(
        "engine  actors  in flight  wall s  req/s   vs local  steady req/s  (Ray start-up s)"
    )
    for row in rows:
        startup = f"  ({row.startup_s:.1f})" if row.engine == "ray" else ""
        versus = f"{row.requests_per_s / local:>8.2f}×" if local else f"{'-':>9}"
        typer.echo(
            f"{row.engine:<7} {row.actors or '-':>6}  {row.in_flight:>9}  {row.wall_s:>6.1f}  "
            f"{row.requests_per_s:>5.1f}  {versus}  {row.steady_per_s:>12.1f}{startup}"
        )
    typer.echo("(steady: from the first answer to the last, without starting the actors)")
