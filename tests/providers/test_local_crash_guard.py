"""A mixture of several local models batching long answers must not crash the process.

Several models loading at once each read llama.cpp's system information from one
buffer while another thread rewrote it; a read cut short turned extra buffers on in a
build with AMX, and the AMX kernels killed the process (SIGSEGV) in about one run of
three (the ``local`` preset with ``local: {batch: 32}``). Each run here is a child
process, so that a crash fails the test instead of ending the suite.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from moa.providers.catalog import CATALOG, model_dir

pytestmark = pytest.mark.slow

RUNS = 3
MOA = [sys.executable, "-c", "from moa.cli.main import main; main()"]


@pytest.fixture
def three_models(tmp_path: Path) -> list[Path]:
    """Three files, so three models load (on three worker threads) and batch side by side."""
    pytest.importorskip("llama_cpp")
    source = model_dir() / CATALOG["smollm2-135m"].filename
    if not source.is_file():
        pytest.skip(f"SmolLM2-135M is not at {source}; run: moa models pull smollm2-135m")
    copies = [tmp_path / f"model-{n}.gguf" for n in range(3)]
    for copy in copies:
        shutil.copyfile(source, copy)
    return copies


def test_a_three_model_mixture_with_batch_32_runs_without_a_crash(
    three_models: list[Path], tmp_path: Path
) -> None:
    config = {
        "name": "three-local-batch-32",
        "defaults": {"temperature": 0.7, "max_tokens": 160},
        "layers": [[{"model": f"local:{path}", "seed": n} for n, path in enumerate(three_models)]],
        "aggregator": {"model": f"local:{three_models[0]}", "max_tokens": 160},
        "local": {"batch": 32, "n_ctx": 1024},
        "retry": {"max_attempts": 1},
    }
    path = tmp_path / "mixture.yaml"
    path.write_text(yaml.safe_dump(config))
    for n in range(RUNS):
        done = subprocess.run(
            [*MOA, "run", "--config", str(path), "--json", "Tell a story about a lighthouse."],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode < 0:
            pytest.fail(f"run {n + 1} died of {signal.Signals(-done.returncode).name}")
        assert done.returncode == 0, done.stderr[-2000:]
        assert '"ok": true' in done.stdout
