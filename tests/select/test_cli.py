from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from moa.cli.main import app
from moa.config import load_config
from moa.providers.registry import register_kind
from moa.testing import FunctionProvider

runner = CliRunner()


def test_select_writes_a_runnable_config_and_a_report(
    gsm8k: Path, provider: FunctionProvider, tmp_path: Path
) -> None:
    register_kind("select-test", lambda name, settings, local: provider)
    base = tmp_path / "pool.yaml"
    base.write_text("providers:\n  sel: {kind: select-test}\naggregator: {model: 'sel:strong'}\n")
    out = tmp_path / "out"
    args = ["select", "-m", "sel:strong", "-m", "sel:weak", "--task", "gsm8k"]
    args += ["--data", str(gsm8k), "--config", str(base), "--dev", "12", "--heldout", "16"]
    args += ["--cache", str(tmp_path / "c.sqlite"), "--out", str(out), "--samples", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    config = load_config(out / "select.yaml")
    assert "sel" in config.providers
    assert "## Held-out results (16 items)" in (out / "report.md").read_text()
    assert (out / "select.json").is_file()
    assert "select.yaml" in result.stderr
    # Off a terminal, one line per answered item, with the configuration's ETA.
    assert "[1/12] single strong item" in result.stderr
    assert "[16/16] single strong item" in result.stderr and "ETA 0 min" in result.stderr


def test_select_reports_bad_input_in_one_line(gsm8k: Path, tmp_path: Path) -> None:
    args = ["select", "-m", "fake:a", "--task", "gsm8k", "--data", str(gsm8k)]
    result = runner.invoke(app, [*args, "--dev", "40", "--heldout", "40", "--no-cache"])
    assert result.exit_code == 2
    assert "fewer than --dev" in result.stderr


def test_select_limit_reaches_the_splits(gsm8k: Path, tmp_path: Path) -> None:
    args = ["select", "-m", "fake:a", "--task", "gsm8k", "--data", str(gsm8k), "--no-cache"]
    result = runner.invoke(app, [*args, "--limit", "20", "--dev", "12", "--heldout", "16"])
    assert result.exit_code == 2
    assert "the first 20 of" in result.stderr
