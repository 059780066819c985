"""``moa bench batch``: throughput of ``moa batch`` on the local engine and on Ray, side by side.

Both engines answer the same Batch API file through the same mixture against
a fake OpenAI-compatible upstream in its own process, whose every call takes a
fixed time, with the same number of requests in flight in all (``--concurrency``;
split evenly over the Ray actors). Ray's start-up is timed apart from the job.
"""

from __future__ import annotations

import json
import tempfile
import time
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


def run_bench(
    requests: int, latency: float, agents: int, concurrency: int, actors: list[int]
) -> list[BatchBenchRow]:
    """Run the local engine once and Ray once per entry of ``actors``; one row each."""
    from moa.batch import BatchOptions, ConfigMixture, LocalEngine, RayEngine, run_batch
    from moa.batch.ray_engine import _ray, start_ray
    from moa.bench.upstream import ChildUpstream
    from moa.config import parse_config
    from moa.testing.openai_server import ModelBehavior

    rows: list[BatchBenchRow] = []
    behavior = ModelBehavior(text="a fixed answer of a few words", latency=latency)
    with ChildUpstream(default=behavior) as upstream, tempfile.TemporaryDirectory() as folder:
        config = parse_config(_config(upstream.base_url, agents))
        factory = ConfigMixture(config, cache=None)
        source = Path(folder) / "requests.jsonl"
        _requests(source, requests)
        summary = run_batch(
            BatchOptions(source, Path(folder) / "local.jsonl"), factory, LocalEngine(concurrency)
        )
        rows.append(
            BatchBenchRow(
                "local", requests, concurrency, None, summary.wall_s, requests / summary.wall_s
            )
        )
        ray = _ray()
        started = time.perf_counter()
        start_ray()
        startup = time.perf_counter() - started
        try:
            for count in actors:
                per_actor = max(1, concurrency // count)
                engine = RayEngine(actors=count, concurrency=per_actor, actor_cpus=0.25)
                output = Path(folder) / f"ray-{count}.jsonl"
                summary = run_batch(BatchOptions(source, output), factory, engine)
                rows.append(
                    BatchBenchRow(
                        "ray",
                        requests,
                        per_actor * count,
                        count,
                        summary.wall_s,
                        requests / summary.wall_s,
                        startup,
                    )
                )
        finally:
            ray.shutdown()
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
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Measure requests per second of moa batch: --engine local, then --engine ray."""
    rows = run_bench(requests, latency, agents, concurrency, actors or [2])
    if as_json:
        typer.echo(json.dumps([asdict(row) for row in rows], indent=2))
        return
    local = rows[0].requests_per_s
    typer.echo(
        f"{requests} requests, {agents} proposers + aggregator, {latency:g}s per call, "
        f"{concurrency} in flight"
    )
    typer.echo("engine  actors  in flight  wall s  req/s   vs local  (Ray start-up s)")
    for row in rows:
        startup = f"  ({row.startup_s:.1f})" if row.engine == "ray" else ""
        typer.echo(
            f"{row.engine:<7} {row.actors or '-':>6}  {row.in_flight:>9}  {row.wall_s:>6.1f}  "
            f"{row.requests_per_s:>5.1f}  {row.requests_per_s / local:>8.2f}×{startup}"
        )
