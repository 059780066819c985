"""Fixtures for strategy tests: a mixture over fakes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from moa import Mixture, MixtureSpec, ProviderRegistry
from moa.testing import FakeProvider

Build = Callable[[dict[str, Any], FakeProvider], Mixture]


@pytest.fixture
def build() -> Build:
    def make(spec: dict[str, Any], provider: FakeProvider) -> Mixture:
        registry = ProviderRegistry().add("fake", provider)
        return Mixture(MixtureSpec.model_validate(spec), registry)

    return make
