"""Requests generated from the server's own OpenAPI document: never a 5xx, always an
OpenAI-shaped error naming the field.

``MOA_FUZZ_EXAMPLES`` sets how many requests the generated run sends (default 2,000,
the CI's bound); ``MOA_FUZZ_EXAMPLES=10000 bash scripts/test tests/server/test_server_fuzz.py``
is the long run.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_helpers import fake_mixture
from starlette.testclient import TestClient

from moa import ProviderRegistry
from moa.server import ServerSettings, create_app
from moa.testing import FakeProvider

schemathesis = pytest.importorskip("schemathesis")

EXAMPLES = int(os.environ.get("MOA_FUZZ_EXAMPLES", "2000"))
# Most requests go to the one operation with a body; models by id get the rest (any string
# is a valid id there, so there are no invalid ones to generate).
SHARES = {
    ("POST", "/v1/chat/completions", "positive"): 0.5,
    ("POST", "/v1/chat/completions", "negative"): 0.4,
    ("GET", "/v1/models/{model}", "positive"): 0.1,
}
KNOWN_MODELS = ("fake-moa", "fake:solo")


@pytest.fixture(scope="module")
def app() -> Any:
    fake = FakeProvider(replies={"a": "alpha: 4", "b": "beta: 5", "c": "gamma: 4", "agg": "4"})
    registry = ProviderRegistry().add("fake", fake)
    return create_app(
        ServerSettings(include_presets=False, max_messages=50),
        mixtures={"fake-moa": fake_mixture(fake)},
        providers=registry,
    )


def check(response: Any, where: str, statuses: Counter[int]) -> None:
    statuses[response.status_code] += 1
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"], where
        assert isinstance(error["type"], str) and "param" in error and "code" in error, where


@pytest.mark.parametrize(("method", "path", "mode"), list(SHARES))
def test_generated_requests_never_break_the_server(
    app: Any, method: str, path: str, mode: str
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operation = schema[path][method]
    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))
    statuses: Counter[int] = Counter()
    count = max(1, round(EXAMPLES * SHARES[(method, path, mode)]))

    @settings(max_examples=count, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=strategy, model=st.sampled_from((None, *KNOWN_MODELS)))
    def send(case: Any, model: str | None) -> None:
        # Half the bodies name a model that exists, so the run goes past the lookup.
        if model is not None and isinstance(case.body, dict):
            case.body["model"] = model
        check(case.call(), f"{method} {path} {json.dumps(case.body, default=str)[:300]}", statuses)

    send()
    assert sum(statuses.values()) >= count * 0.9  # the bound was really sent
    if mode == "positive" and method == "POST":
        assert statuses[200] > 0, statuses  # and some of it was answered
    with TestClient(app) as client:  # and it still answers afterwards
        assert client.get("/healthz").json()["status"] == "ok"
