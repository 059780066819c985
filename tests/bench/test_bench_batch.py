"""``moa bench batch`` measures both engines on a tiny batch."""

from __future__ import annotations

import pytest

from moa.bench.batch import run_bench

pytest.importorskip("ray.data")


def test_the_batch_benchmark_measures_local_and_ray_rows() -> None:
    rows = run_bench(requests=6, latency=0.05, agents=2, concurrency=4, actors=[2])
    assert [(row.engine, row.actors) for row in rows] == [("local", None), ("ray", 2)]
    assert all(row.requests == 6 and row.requests_per_s > 0 for row in rows)
    assert rows[1].in_flight == 4 and rows[1].startup_s > 0
