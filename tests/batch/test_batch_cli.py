"""``moa batch`` on the command line, against a fake OpenAI-compatible server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from batch_helpers import read_lines, write_requests
from typer.testing import CliRunner

from moa.cli.main import app
from moa.testing import FakeOpenAIServer, ModelBehavior


def test_moa_batch_runs_a_batch_api_file_through_a_config(tmp_path: Path) -> None:
    with FakeOpenAIServer(default=ModelBehavior(text="an answer")) as server:
        config = tmp_path / "moa.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "name": "cli-moa",
                    "providers": {"up": {"base_url": server.base_url, "requires_key": False}},
                    "layers": [{"agents": [{"model": "up:a"}, {"model": "up:b"}]}],
                    "aggregator": {"model": "up:c"},
                }
            )
        )
        source = write_requests(tmp_path / "in.jsonl", 5)
        output = tmp_path / "out.jsonl"
        args = ["batch", str(source), "-o", str(output), "-c", str(config), "--no-cache"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "5 done, 0 failed" in result.output
        lines = read_lines(output)
        assert [line["response"]["body"]["model"] for line in lines] == ["cli-moa"] * 5  # type: ignore[index]
        again = CliRunner().invoke(app, args)
        assert "5 from earlier runs" in again.output
        assert len(server.requests) == 15


def test_one_model_with_an_unknown_provider_says_how_to_add_it(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"q": "hello"}) + "\n")
    output = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        app,
        ["batch", str(source), "-o", str(output), "-m", "up:model", "--column", "q"],
        env={"UP_API_KEY": "x"},
    )
    assert result.exit_code == 2
    assert "unknown provider 'up'" in result.output
    assert "providers:" in result.output
    both = CliRunner().invoke(
        app, ["batch", str(source), "-o", str(output), "-m", "up:x", "-p", "local"]
    )
    assert "give one of --model, --preset and --config" in both.output


@pytest.mark.parametrize("engine", ["spark"])
def test_an_unknown_engine_is_refused(tmp_path: Path, engine: str) -> None:
    source = write_requests(tmp_path / "in.jsonl", 1)
    result = CliRunner().invoke(
        app, ["batch", str(source), "-o", str(tmp_path / "o.jsonl"), "--engine", engine]
    )
    assert result.exit_code == 2
    assert "--engine must be local or ray" in result.output
