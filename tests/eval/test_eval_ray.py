"""``moa eval`` on Ray actors logs what it logs in this process, and resumes the same way.

One Ray session (bound to loopback) serves the whole module: starting Ray
takes seconds on a small machine.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import eval_helpers
import pytest
from eval_helpers import FIXTURES, Interrupted, StopAfter, fake_registry

from moa.eval import EvalOptions, EvalRun
from moa.eval.records import ItemLog

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

DATA = str(FIXTURES / "gsm8k_mini.jsonl")
TIMING = frozenset({"finished_at", "latency_s", "ttft_s", "wall_s", "queued_s", "cached_latency_s"})


@pytest.fixture(scope="module", autouse=True)
def ray_session() -> Iterator[None]:
    from moa.batch.ray_engine import start_ray

    # Actors build the fake models from this test helper module, shipped by value.
    ray.cloudpickle.register_pickle_by_value(eval_helpers)
    start_ray()
    yield
    ray.shutdown()


def _options(out: Path, mixture_file: Path, **changes: Any) -> EvalOptions:
    return EvalOptions("gsm8k", DATA, out, systems=[str(mixture_file)], block=3, **changes)


def _on_ray(out: Path, mixture_file: Path, **changes: Any) -> EvalOptions:
    return _options(out, mixture_file, engine="ray", actors=2, concurrency=2, **changes)


def _without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def _records(out: Path) -> list[dict[str, Any]]:
    records = [_without_timing(r) for r in ItemLog(out / "items.jsonl")]
    return sorted(records, key=lambda r: (r["system"], r["item_id"]))


def test_both_engines_log_identical_records(tmp_path: Path, mixture_file: Path) -> None:
    local, distributed = tmp_path / "local", tmp_path / "ray"
    here = functools.partial(fake_registry, str(tmp_path / "local.sqlite"))
    builders = tmp_path / "builders"
    builders.mkdir()
    there = functools.partial(fake_registry, str(tmp_path / "ray.sqlite"), str(builders))
    EvalRun(_options(local, mixture_file, concurrency=4), registry_factory=here).run()
    EvalRun(_on_ray(distributed, mixture_file), registry_factory=there).run()
    assert {p.name for p in builders.iterdir()} - {str(os.getpid())}, "no item ran on an actor"
    ours, theirs = _records(local), _records(distributed)
    # mix, its three models alone and the Self-MoA of the best one, on six items
    assert len(ours) == 5 * 6
    assert {r["system"] for r in ours} >= {"mix", "fake:strong", "self-moa-strong"}
    assert ours == theirs
    from moa.eval.report import write_report

    def scores(out: Path) -> list[tuple[str, int, float | None]]:
        ranked = write_report(out).ranked()
        return [(s.name, s.n, None if s.score is None else s.score.mean) for s in ranked]

    assert scores(local) == scores(distributed)


def test_an_interrupted_ray_run_resumes_from_its_log_and_the_call_cache(
    tmp_path: Path, mixture_file: Path
) -> None:
    out = tmp_path / "out"
    registry = functools.partial(fake_registry, str(tmp_path / "calls.sqlite"))
    with pytest.raises(Interrupted):
        EvalRun(_on_ray(out, mixture_file), registry_factory=registry).run(StopAfter(7))
    kept = _records(out)
    assert len(kept) == 7
    EvalRun(_on_ray(out, mixture_file), registry_factory=registry).run()
    records = _records(out)
    pairs = [(r["system"], r["item_id"]) for r in records]
    assert len(pairs) == len(set(pairs)) == 5 * 6, "nothing lost, nothing logged twice"
    assert all(r in records for r in kept)
    # A fresh folder on the same cache: every item runs again, every call is a cache hit.
    EvalRun(_on_ray(tmp_path / "fresh", mixture_file), registry_factory=registry).run()
    fresh = list(ItemLog(tmp_path / "fresh" / "items.jsonl"))
    assert len(fresh) == 5 * 6
    assert all(r["latency_source"] == "replayed" for r in fresh)


def test_moa_eval_engine_ray_from_the_command_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from moa.cli.main import app
    from moa.testing import FakeOpenAIServer, ModelBehavior

    with FakeOpenAIServer(default=ModelBehavior(text="The answer is 7")) as server:
        config = tmp_path / "mix.yaml"
        config.write_text(
            "name: mix\n"
            f"providers:\n  up: {{base_url: {server.base_url!r}, requires_key: false}}\n"
            'layers:\n  - [{model: "up:a"}, {model: "up:b"}]\n'
            'aggregator: {model: "up:agg"}\n'
        )
        args = ["eval", "gsm8k", "--data", DATA, "--system", str(config), "--limit", "3"]
        args += ["--out", str(tmp_path / "out"), "--cache", str(tmp_path / "calls.sqlite")]
        result = CliRunner().invoke(app, [*args, "--engine", "ray", "--actors", "2"])
        assert result.exit_code == 0, result.stderr
        calls = len(server.requests)
        assert calls > 0
        records = list(ItemLog(tmp_path / "out" / "items.jsonl"))
        assert len(records) == 5 * 3  # mix, a, b, agg alone, Self-MoA
        assert {r["score"] for r in records if r["item_id"] == "0"} == {1.0}  # Tom: 7
        again = CliRunner().invoke(app, [*args, "--engine", "ray"])
        assert again.exit_code == 0 and "resuming: 15 of 15" in again.stderr
        assert len(server.requests) == calls
    refused = CliRunner().invoke(app, [*args, "--engine", "spark"])
    assert refused.exit_code == 2 and "--engine must be local or ray" in refused.stderr
