"""``--engine ray`` gives what ``--engine local`` gives, and survives a lost actor.

One Ray session (bound to loopback) serves the whole module: starting Ray
takes seconds on a small machine.
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import batch_helpers
import pytest
from batch_helpers import crashing_mixture, fake_mixture, read_lines, without_timing, write_requests

from moa.batch import BatchOptions, LocalEngine, RayEngine, run_batch

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")


@pytest.fixture(scope="module", autouse=True)
def ray_session() -> Iterator[None]:
    from moa.batch.ray_engine import start_ray

    # Actors build the mixture from this test helper module, shipped by value.
    ray.cloudpickle.register_pickle_by_value(batch_helpers)
    start_ray()
    yield
    ray.shutdown()


def test_both_engines_give_identical_output(tmp_path: Path) -> None:
    source = write_requests(tmp_path / "in.jsonl", 200, extra=["{not json"])
    local = run_batch(
        BatchOptions(source, tmp_path / "local.jsonl"), fake_mixture, LocalEngine(concurrency=8)
    )
    distributed = run_batch(
        BatchOptions(source, tmp_path / "ray.jsonl"),
        fake_mixture,
        RayEngine(actors=2, concurrency=8),
    )
    assert (local.done, local.failed) == (distributed.done, distributed.failed) == (200, 1)
    assert local.tokens == distributed.tokens
    ours = [without_timing(line) for line in read_lines(tmp_path / "local.jsonl")]
    theirs = [without_timing(line) for line in read_lines(tmp_path / "ray.jsonl")]
    assert len(ours) == 201
    assert ours == theirs


def test_a_table_through_ray_matches_the_local_table(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("prompt\n" + "".join(f"question {n}\n" for n in range(20)))
    run_batch(BatchOptions(source, tmp_path / "local.csv"), fake_mixture, LocalEngine())
    run_batch(BatchOptions(source, tmp_path / "ray.csv"), fake_mixture, RayEngine(actors=2))
    assert (tmp_path / "local.csv").read_text() == (tmp_path / "ray.csv").read_text()


def test_an_actor_killed_mid_job_loses_and_repeats_nothing(tmp_path: Path) -> None:
    source = write_requests(tmp_path / "in.jsonl", 120)
    output = tmp_path / "out.jsonl"
    marker = tmp_path / "crashed"
    factory = functools.partial(crashing_mixture, str(marker), 40)
    engine = RayEngine(actors=2, concurrency=4)
    # Ray retries the lost actor's batch; should it give up instead, the rerun must finish.
    with contextlib.suppress(Exception):
        run_batch(BatchOptions(source, output), factory, engine)
    assert marker.exists(), "an actor process was killed during the job"
    first = [line["custom_id"] for line in read_lines(output)]
    assert len(first) == len(set(first))
    summary = run_batch(BatchOptions(source, output), factory, engine)
    assert summary.complete
    lines = read_lines(output)
    assert [line["custom_id"] for line in lines] == [f"req-{n}" for n in range(120)]
    assert Counter(line["response"]["status_code"] for line in lines) == {200: 120}  # type: ignore[index]
    expected = run_batch(BatchOptions(source, tmp_path / "local.jsonl"), fake_mixture)
    assert expected.complete
    assert [without_timing(x) for x in lines] == [
        without_timing(x) for x in read_lines(tmp_path / "local.jsonl")
    ]
