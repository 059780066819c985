"""The README's offline examples are executed, so they stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from moa.config import load_config

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_starts_with_the_two_commands() -> None:
    commands = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)[:2]
    assert "moa models pull local" in commands[0] and ".venv/bin/moa " in commands[0]
    assert commands[1].strip() == "bash scripts/test"
    ci = (README.parent / ".ci" / "run").read_text()
    assert ci.rstrip().endswith("exec " + commands[1].strip())
    # Right after the first command, the second installs what the tests need, then runs them.
    script = (README.parent / "scripts" / "test").read_text()
    assert "pip install --quiet -e '.[local,server,eval,ray,otel,dev]'" in script
    assert "moa models pull smollm2-135m" in script
    assert script.rstrip().endswith('exec .venv/bin/python -m pytest "$@"')


@pytest.mark.parametrize("block", [b for b in python_blocks() if "moa.testing" in b])
def test_offline_readme_example_runs(block: str) -> None:
    exec(compile(block, str(README), "exec"), {})


@pytest.mark.parametrize(
    "path",
    sorted((README.parent / "docs" / "reports").rglob("*.yaml")),
    ids=lambda p: p.relative_to(README.parent / "docs" / "reports").as_posix(),
)
def test_report_configs_still_load(path: Path) -> None:
    """A report's configs (e.g. the one `moa select` chose) stay valid for `moa run --config`."""
    config = load_config(path)
    assert config.name
