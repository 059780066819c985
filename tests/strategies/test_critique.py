from __future__ import annotations

from typing import Any

from moa.strategies.common import prompt
from moa.testing import FunctionProvider
from moa.types import CompletionRequest


def system(request: CompletionRequest) -> str:
    return request.messages[0].content if request.messages[0].role == "system" else ""


async def test_each_answer_is_reviewed_and_the_aggregator_sees_answers_with_reviews(
    build: Any,
) -> None:
    def reply(request: CompletionRequest) -> str:
        text = system(request)
        if request.model == "critic":
            answer = "alpha" if "alpha" in text else "beta"
            return f"review of {answer}"
        if request.model == "agg":
            return "final"
        return "alpha" if request.model == "a" else "beta"

    fake = FunctionProvider(reply)
    spec = {
        "layers": [[{"model": "fake:a"}, {"model": "fake:b"}]],
        "aggregator": {"model": "fake:agg"},
        "strategy": {"type": "critique", "critic": {"model": "fake:critic"}},
    }
    result = await build(spec, fake).arun("q")
    critic_calls = fake.calls_for("critic")
    assert len(critic_calls) == 2
    assert prompt("critique") in system(critic_calls[0])
    assert "beta" not in system(critic_calls[0]) or "alpha" not in system(critic_calls[0])
    final = system(fake.calls_for("agg")[0])
    assert prompt("aggregate_reviewed") in final
    assert final.index("alpha") < final.index("review of alpha") < final.index("beta")
    assert "review of beta" in final
    assert result.output == "final"
    assert len(result.extra_calls) == 2
    assert result.usage.calls == 5
