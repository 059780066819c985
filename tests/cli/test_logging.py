"""$MOA_LOG: the library's log lines on stderr."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from moa.cli.main import main


@pytest.fixture
def moa_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("moa")
    handlers, level = list(logger.handlers), logger.level
    yield logger
    logger.handlers[:], logger.level = handlers, level


def test_moa_log_sends_the_library_s_lines_to_stderr(
    monkeypatch: pytest.MonkeyPatch, moa_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MOA_LOG", "DEBUG")
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code in (0, None) and moa_logger.level == logging.DEBUG
    with pytest.raises(SystemExit):
        main(["--version"])  # a second run in the same process adds no second handler
    assert len(moa_logger.handlers) == 1
    logging.getLogger("moa.providers.local_batch").debug("batch of m (running): 2 calls")
    assert "moa.providers.local_batch: batch of m (running): 2 calls" in capsys.readouterr().err


def test_an_unknown_moa_log_level_is_an_error_naming_the_levels(
    monkeypatch: pytest.MonkeyPatch, moa_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MOA_LOG", "loud")
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "MOA_LOG must be one of debug, info, warning, error, not 'loud'" in error


def test_a_crash_in_native_code_is_reported_on_stderr() -> None:
    """A segmentation fault (as llama.cpp's AMX kernels caused) shows where each thread was."""
    crash = "import ctypes; from moa.cli import main; main._report_crashes(); ctypes.string_at(0)"
    done = subprocess.run(
        [sys.executable, "-c", crash], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in done.stderr
    assert "most recent call first" in done.stderr
