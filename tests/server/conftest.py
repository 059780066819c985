"""Fixtures of the server tests: ``serve(...)`` starts a real server for fake mixtures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from server_helpers import ANSWER, ServeFactory, fake_mixture, running

from moa import Mixture, ProviderRegistry
from moa.server import ServerSettings, create_app
from moa.testing import FakeProvider


@pytest.fixture
def fake() -> FakeProvider:
    return FakeProvider(replies={"a": "alpha: 4", "b": "beta: 5", "c": "gamma: 4", "agg": ANSWER})


@pytest.fixture
def serve(fake: FakeProvider) -> Iterator[ServeFactory]:
    """``serve(**settings)`` starts a server for ``fake-moa`` (and ``fake:`` pass-through)."""
    stack: list[Any] = []

    def start(mixtures: dict[str, Mixture] | None = None, **settings: Any) -> str:
        registry = ProviderRegistry().add("fake", fake)
        app = create_app(
            ServerSettings(include_presets=False, **settings),
            mixtures=mixtures or {"fake-moa": fake_mixture(fake)},
            providers=registry,
        )
        context = running(app)
        stack.append(context)
        return context.__enter__()

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)
