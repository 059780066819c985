from __future__ import annotations

import json

from typer.testing import CliRunner

from moa import Mixture, MixtureSpec, ProviderRegistry
from moa.bench.latency import (
    MODES,
    LatencyReport,
    ModeTiming,
    UpstreamSetup,
    measure_latency,
    mode_mixtures,
)
from moa.cli.main import app
from moa.testing import FakeProvider

TINY = UpstreamSetup(
    proposers=2,
    proposal_tokens=80,
    min_rate=100,
    max_rate=200,
    proposer_first_token=0.05,
    aggregator_first_token=0.2,
    aggregator_rate=200,
    answer_tokens=20,
)


def test_the_four_modes_share_one_mixture() -> None:
    spec = MixtureSpec.model_validate(
        {
            "layers": [[{"model": "f:a"}, {"model": "f:b"}, {"model": "f:c"}]],
            "aggregator": {"model": "f:agg"},
        }
    )
    standard = Mixture(spec, ProviderRegistry().add("f", FakeProvider()))
    modes = mode_mixtures(standard, chunked={"chunk_tokens": 8}, quorum=None)
    assert list(modes) == list(MODES)
    assert modes["single"].spec.layers == []
    assert modes["chunked"].spec.strategy.type == "chunked"
    assert modes["chunked"].spec.strategy.options().model_dump()["chunk_tokens"] == 8
    assert modes["quorum"].spec.layers[0].quorum == 1
    assert all(m.providers is standard.providers for m in modes.values())


def test_ratios_are_to_the_single_model() -> None:
    report = LatencyReport(
        "setup",
        {},
        {
            "single": [ModeTiming(1.0, 4.0, 1, 10), ModeTiming(3.0, 4.0, 1, 10)],
            "chunked": [ModeTiming(3.0, 8.0, 5, 10)],
        },
    )
    assert report.ratio("chunked", "ttft") == 1.5
    assert report.ratio("chunked", "total") == 2.0
    assert report.to_dict()["target_met"] is True
    assert "met (1.50 x)" in report.format()


def test_chunk_wise_beats_standard_ttft_against_the_fake_upstream() -> None:
    report = measure_latency(TINY, chunked={"chunk_tokens": 4}, runs=1)
    assert set(report.timings) == set(MODES)
    single, standard = report.median_ttft("single"), report.median_ttft("standard")
    chunked, quorum = report.median_ttft("chunked"), report.median_ttft("quorum")
    assert single and standard and chunked and quorum
    assert single >= 0.2
    assert standard >= 0.05 + 80 / 100 + 0.2  # waits for the slowest proposer
    assert chunked < standard / 2
    assert quorum < standard  # only the faster proposer is waited for
    calls = {mode: runs[0].calls for mode, runs in report.timings.items()}
    assert calls["single"] == 1 and calls["standard"] == 3 and calls["chunked"] > 3
    assert all(runs[0].output_chars > 0 for runs in report.timings.values())


def test_cli_prints_json() -> None:
    args = ["bench", "latency", "--runs", "1", "--proposers", "1", "--proposal-tokens", "10"]
    args += ["--min-rate", "500", "--proposer-ttft", "0", "--aggregator-ttft", "0.01"]
    args += ["--aggregator-rate", "500", "--answer-tokens", "5", "--json"]
    args += ["--first-chunk-tokens", "2", "--start-quorum", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data["modes"]) == set(MODES)
    assert data["modes"]["single"]["ttft_ratio_to_single"] == 1.0
    assert data["options"]["chunked.first_chunk_tokens"] == 2
    assert data["options"]["chunked.start_quorum"] == 1
