from __future__ import annotations

import json

from typer.testing import CliRunner

from moa.bench.server import BenchShape, RequestTiming, ServerBenchReport, measure_server
from moa.cli.main import app


def test_added_latency_is_measured_over_the_upstream_critical_path() -> None:
    shape = BenchShape(requests=3, concurrency=3, layers=2, latency=1.0, first_token=0.25)
    assert shape.ideal_s == 3.0 and shape.ideal_ttft_s == 2.25
    timings = [
        RequestTiming(10.0, 12.26, 13.01, 200),
        RequestTiming(10.0, 12.3, 13.04, 200),
        RequestTiming(10.0, None, 10.5, 502, "HTTP 502"),
    ]
    report = ServerBenchReport(shape, timings, wall_s=3.1)
    assert [round(ms) for ms in report.added_ms] == [10, 40]
    assert [round(ms) for ms in report.added_ttft_ms] == [10, 50]
    assert len(report.errors) == 1
    assert report.peak_in_flight == 3
    ends_first = [RequestTiming(0.0, None, 1.0, 200), RequestTiming(1.0, None, 2.0, 200)]
    assert ServerBenchReport(shape, ends_first, wall_s=2.0).peak_in_flight == 1
    assert not report.met  # an error fails the target whatever the latency
    assert "errors: 1 of 3 (HTTP 502)" in report.format()


def test_benchmark_runs_through_a_real_server_at_tiny_scale() -> None:
    shape = BenchShape(requests=6, concurrency=3, ramp=0.0, latency=0.3, first_token=0.1, tokens=5)
    report = measure_server(shape)
    assert len(report.timings) == 6
    assert report.errors == []
    for added in report.added_ms:
        assert -5 < added < 3000  # never faster than the upstream itself
    assert all(t.first_token is not None for t in report.timings)
    assert len(report.upstream_late_ms) == 6 * 4  # three proposers and an aggregator each
    assert report.server_cpu_s is None or report.server_cpu_s > 0
    assert report.upstream_retries == 0  # read from the server's /metrics
    assert "added latency, end of stream" in report.format()
    assert "upstream calls retried by the server: 0" in report.format()
    # History on by default: every request (and the four warm-up ones) was recorded.
    assert report.history_runs == 6 + 4
    assert "run history: on, 10 run(s) written" in report.format()


def test_inprocess_upstream_measures_the_server_alone() -> None:
    shape = BenchShape(
        requests=4,
        concurrency=4,
        ramp=0.0,
        latency=0.3,
        first_token=0.1,
        tokens=5,
        upstream="inprocess",
    )
    report = measure_server(shape)
    assert report.errors == []
    assert report.upstream_late_ms == []  # no HTTP upstream to measure
    assert all(-5 < added < 3000 for added in report.added_ms)
    assert all(-5 < added < 3000 for added in report.added_ttft_ms)
    assert "in-process fakes" in report.format()
    assert report.history_runs == 4 + 4


def test_history_can_be_off() -> None:
    shape = BenchShape(
        requests=2, concurrency=2, ramp=0.0, latency=0.1, first_token=0.05, tokens=3, history=False
    )
    report = measure_server(shape)
    assert report.errors == [] and report.history_runs is None
    assert "run history: off" in report.format()


def test_command_prints_json() -> None:
    args = ["bench", "server", "--requests", "2", "--concurrency", "2", "--latency", "0.1"]
    args += ["--first-token", "0.05", "--tokens", "3", "--ramp", "0", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["requests"] == 2 and data["errors"] == 0 and data["upstream_retries"] == 0
    assert set(data["added_ms"]) == {"p50", "p90", "p99", "max"}
    assert data["peak_in_flight"] == 2
