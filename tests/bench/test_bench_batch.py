"""``moa bench batch`` measures both engines on a tiny batch."""

from __future__ import annotations

import os

import pytest

from moa.bench.batch import run_bench

pytest.importorskip("ray.data")


def test_the_batch_benchmark_measures_local_and_ray_rows() -> None:
    rows = run_bench(requests=6, latency=0.05, agents=2, concurrency=4, actors=[2])
    assert [(row.engine, row.actors) for row in rows] == [("local", None), ("ray", 2)]
    assert all(row.requests == 6 and row.requests_per_s > 0 for row in rows)
    assert rows[1].in_flight == 4 and rows[1].startup_s > 0


@pytest.mark.skipif(
    os.environ.get("MOA_TEST_RAY_CLUSTER") != "1",
    reason="Ray's multi-node test cluster listens on this machine's network address, not on "
    "loopback; set MOA_TEST_RAY_CLUSTER=1 to run it",
)
def test_on_a_test_cluster_each_actor_adds_its_own_requests_in_flight() -> None:
    rows = run_bench(
        requests=8,
        latency=0.05,
        agents=2,
        concurrency=4,
        actors=[1, 2],
        per_actor=2,
        nodes=2,
        upstream_limit=3,
        local=False,
    )
    assert [(row.engine, row.actors, row.in_flight) for row in rows] == [
        ("ray", 1, 2),
        ("ray", 2, 4),
    ]
    assert all(row.nodes == 2 and row.requests_per_s > 0 and row.steady_per_s > 0 for row in rows)
