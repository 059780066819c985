"""A scripted provider kind every history test's config can name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from moa.errors import ProviderStatusError
from moa.providers.registry import register_kind
from moa.testing import FakeProvider

CONFIG = """
name: {name}
providers:
  hist: {{kind: history-test}}
layers:
  - [{{model: "hist:alpha"}}, {{model: "hist:beta"}}, {{model: "hist:broken"}}]
aggregator: {{model: "hist:judge", temperature: 0.2, max_tokens: 64}}
retry: {{max_attempts: 2, backoff_initial: 0.001, jitter: false}}
"""


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    provider = FakeProvider(
        "hist",
        replies={
            "alpha": "Paris is the capital of France.",
            "beta": "The capital is Paris.",
            "broken": ProviderStatusError("upstream broke", status_code=500),
            "judge": "Paris.",
        },
    )
    register_kind("history-test", lambda name, settings, local: provider)
    yield provider


@pytest.fixture
def config(tmp_path: Path, fake: FakeProvider) -> Path:
    path = tmp_path / "geo.yaml"
    path.write_text(CONFIG.format(name="geo"))
    return path


@pytest.fixture
def other_config(tmp_path: Path, fake: FakeProvider) -> Path:
    path = tmp_path / "solo.yaml"
    path.write_text(
        'name: solo\nproviders:\n  hist: {kind: history-test}\naggregator: {model: "hist:beta"}\n'
    )
    return path
