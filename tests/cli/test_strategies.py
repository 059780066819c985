from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from moa.cli.main import app
from moa.providers.registry import register_kind
from moa.testing import FakeProvider

runner = CliRunner()


def test_lists_every_strategy() -> None:
    result = runner.invoke(app, ["strategies"])
    assert result.exit_code == 0
    for name in ("layered", "self-moa", "self-moa-seq", "vote", "rank", "sparse", "critique"):
        assert name in result.stdout


def test_shows_one_strategy_s_options_and_roles() -> None:
    result = runner.invoke(app, ["strategies", "roles"])
    assert result.exit_code == 0
    assert "greedy_first" in result.stdout and "careful" in result.stdout
    result = runner.invoke(app, ["strategies", "nope"])
    assert result.exit_code == 2
    assert "unknown strategy" in result.stdout


def test_run_with_a_strategy_config(tmp_path: Path) -> None:
    fake = FakeProvider("voting", replies={"m": ["Answer: 4", "Answer: 5", "It is 4."]})
    register_kind("voting-test", lambda name, settings, local: fake)
    config = tmp_path / "vote.yaml"
    config.write_text(
        "providers:\n  voting: {kind: voting-test}\n"
        "aggregator: {model: 'voting:m'}\n"
        "strategy: {type: vote, samples: 3}\n"
    )
    result = runner.invoke(app, ["run", "2+2?", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["output"] == "Answer: 4"
    assert any("'4': 2" in note for note in data["notes"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("aggregator: {model: 'voting:m'}\nstrategy: {type: vote, sample: 3}\n")
    result = runner.invoke(app, ["run", "2+2?", "--config", str(bad)])
    assert result.exit_code == 2


def test_an_unknown_name_with_brackets_is_printed_as_it_is() -> None:
    result = runner.invoke(app, ["strategies", "[/x] [bold]x"], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert "unknown strategy '[/x] [bold]x'" in result.stdout
