"""Fixtures of the evaluation tests: a fake provider behind a call cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from eval_helpers import arithmetic

from moa.providers.cache import CachingRegistry, SQLiteCallStore
from moa.testing import FunctionProvider


@pytest.fixture
def fake() -> FunctionProvider:
    return FunctionProvider(arithmetic, name="fake")


@pytest.fixture
def registry(tmp_path: Path, fake: FunctionProvider) -> CachingRegistry:
    return CachingRegistry(store=SQLiteCallStore(tmp_path / "calls.sqlite")).add("fake", fake)


@pytest.fixture
def mixture_file(tmp_path: Path) -> Path:
    path = tmp_path / "mix.yaml"
    path.write_text(
        "name: mix\n"
        "layers:\n"
        '  - [{model: "fake:weak"}, {model: "fake:strong"}]\n'
        'aggregator: {model: "fake:agg"}\n'
    )
    return path
