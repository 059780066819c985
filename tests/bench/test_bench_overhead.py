from __future__ import annotations

import json
import math

import httpx
from typer.testing import CliRunner

from moa.bench.overhead import OverheadRun, _critical_path, measure_overhead
from moa.bench.upstream import ChildUpstream
from moa.cli.main import app
from moa.testing.openai_server import ModelBehavior, RequestRecord


def test_critical_path_is_the_slowest_call_of_each_layer_plus_the_aggregator() -> None:
    records = [
        RequestRecord("l1-a1", False, 200, 0.0, 0.2),
        RequestRecord("l1-a2", False, 200, 0.0, 0.5),
        RequestRecord("l2-a1", False, 200, 1.0, 1.3),
        RequestRecord("l2-a2", False, 200, 1.0, 1.1),
        RequestRecord("aggregator", True, 200, 2.0, 2.4),
    ]
    run = _critical_path(records, layers=2, wall_s=1.3)
    assert math.isclose(run.critical_path_s, 0.5 + 0.3 + 0.4)
    assert math.isclose(run.ratio, 1.3 / 1.2)
    assert OverheadRun(1.0, 0.0, (), 0.0).ratio == math.inf


def test_benchmark_runs_at_tiny_scale() -> None:
    report = measure_overhead(layers=1, agents=2, latency=0.05, runs=2)
    assert len(report.runs) == 2
    for run in (report.cold, *report.runs):
        assert len(run.layer_slowest_s) == 1
        assert run.layer_slowest_s[0] >= 0.05 and run.aggregator_s >= 0.05
        assert run.critical_path_s >= 0.1
        # the calls happen inside the run, one stage after the other
        assert run.wall_s >= run.critical_path_s
    assert 1.0 <= report.ratio < 50
    assert "wall / critical" in report.format()
    assert report.to_dict()["calls_per_run"] == 3
    assert report.history_runs == 3  # the cold run and the two warm ones
    assert "run history: on, 3 run(s) written" in report.format()
    assert (
        measure_overhead(layers=1, agents=1, latency=0.02, runs=1, history=False).history_runs
        is None
    )


def test_cli_prints_the_report_as_json() -> None:
    args = ["bench", "overhead", "--layers", "1", "--agents", "1", "--latency", "0.02"]
    result = CliRunner().invoke(app, [*args, "--runs", "1", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["median_ratio"] > 0 and len(data["runs"]) == 1


def test_child_upstream_reports_its_records() -> None:
    with ChildUpstream({"a": ModelBehavior(text="hi", failures=[(500, None)])}) as upstream:
        assert upstream.base_url.startswith("http://127.0.0.1:")
        body = {"model": "a", "messages": [{"role": "user", "content": "q"}]}
        assert httpx.post(f"{upstream.base_url}/chat/completions", json=body).status_code == 500
        assert httpx.post(f"{upstream.base_url}/chat/completions", json=body).status_code == 200
        assert [r.status for r in upstream.records()] == [500, 200]
