"""The server serves every strategy: answers, streaming and usage over the extra calls."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from server_helpers import ServeFactory, fake_mixture

from moa.testing import FakeProvider

USER = [{"role": "user", "content": "What is 2 + 2?"}]
LAYER = [{"model": "fake:a"}, {"model": "fake:b"}, {"model": "fake:c"}]


def spec(strategy: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "strategic",
        "layers": [LAYER],
        "aggregator": {"model": "fake:agg"},
        "strategy": strategy,
    }


@pytest.mark.parametrize(
    ("strategy", "answer", "calls"),
    [
        ({"type": "vote"}, "alpha: 4", 3),
        ({"type": "rank"}, "beta: 5", 4),
        ({"type": "critique", "critic": {"model": "fake:critic"}}, "final", 7),
        ({"type": "reaggregate", "replicas": 2}, "final", 6),
        # 4 samples, the configured layer refines them (3), then 2 sliding steps.
        ({"type": "self-moa-seq", "samples": 4, "window": 2}, "final", 9),
    ],
)
def test_strategies_through_the_openai_api(
    serve: ServeFactory, strategy: dict[str, Any], answer: str, calls: int
) -> None:
    fake = FakeProvider(
        replies={"a": "alpha: 4", "b": "beta: 5", "c": "gamma: 4", "critic": "fine"},
        default="final",
    )
    fake.enqueue("agg", "Best: 2" if strategy["type"] == "rank" else "final")
    base = serve({"strategic": fake_mixture(fake, spec(strategy))})
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    completion = client.chat.completions.create(model="strategic", messages=USER)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == answer
    assert completion.model_extra is not None
    assert completion.model_extra["moa"]["usage"]["calls"] == calls
    stream = client.chat.completions.create(model="strategic", messages=USER, stream=True)  # type: ignore[arg-type]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == answer
