from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
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
    assert "[16/16] single strong item" in result.stderr


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


def test_plain_progress_paces_the_eta_by_items_that_took_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from moa.cli import select as select_cli
    from moa.select.evaluate import Outcome

    clock = iter([0.0, 0.01, 0.02, 60.02, 180.02])  # two cached items, then 60 s and 120 s
    monkeypatch.setattr(select_cli.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    progress = select_cli._ItemProgress(Console(file=out, width=200))
    for done in range(1, 5):
        progress("single m", done, 10, Outcome(str(done), 1.0, "4"))
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("ETA ?") and lines[1].endswith("ETA ?")
    assert lines[2].endswith("ETA 7 min")  # 60 s an item, 7 items left
    assert lines[3].endswith("ETA 9 min")  # (60 + 120) / 2 = 90 s an item, 6 left
