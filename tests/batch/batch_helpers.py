"""A deterministic fake mixture for batch tests (picklable, so Ray actors can build it)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from moa.engine.mixture import Mixture
from moa.engine.spec import AgentSpec, LayerSpec, MixtureSpec
from moa.jsonl import json_lines
from moa.providers.registry import ProviderRegistry
from moa.testing import FunctionProvider
from moa.types import CompletionRequest

PROPOSERS = ("fake:alpha", "fake:beta", "fake:gamma")


def _reply(request: CompletionRequest) -> str:
    """A reply that depends only on the model and the conversation, never on call order."""
    text = "\n".join(m.content for m in request.messages)
    if "PLEASE FAIL" in text:
        raise RuntimeError("scripted upstream failure")
    digest = hashlib.sha256(f"{request.model}|{text}".encode()).hexdigest()[:8]
    return f"{request.model} answers {digest}"


def fake_mixture(delay: float = 0.0) -> Mixture:
    spec = MixtureSpec(
        name="fake-moa",
        layers=[LayerSpec(agents=[AgentSpec(model=m) for m in PROPOSERS])],
        aggregator=AgentSpec(model="fake:omega"),
        prices={"fake:omega": {"input": 1.0, "output": 2.0}},
    )
    provider = FunctionProvider(_reply, name="fake", delay=delay)
    return Mixture(spec, ProviderRegistry().add("fake", provider))


def crashing_mixture(marker: str, after: int = 40) -> Mixture:
    """:func:`fake_mixture` whose process dies at its ``after``-th call, once (``marker`` says so).

    It stands for a Ray actor lost mid-job: a node gone, a process killed.
    """
    calls = 0

    def reply(request: CompletionRequest) -> str:
        nonlocal calls
        calls += 1
        if calls == after and not Path(marker).exists():
            Path(marker).write_text("crashed")
            os._exit(1)
        return _reply(request)

    mixture = fake_mixture()
    provider = FunctionProvider(reply, name="fake", delay=0.01)
    return Mixture(mixture.spec, ProviderRegistry().add("fake", provider))


def write_requests(path: Path, count: int, *, extra: Sequence[str] = ()) -> Path:
    """``count`` Batch API request lines, then the raw ``extra`` lines."""
    lines = [
        json.dumps(
            {
                "custom_id": f"req-{n}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"question number {n}"}],
                    "max_tokens": 64,
                },
            }
        )
        for n in range(count)
    ]
    path.write_text("\n".join([*lines, *extra]) + "\n", encoding="utf-8")
    return path


TIMING = frozenset({"created", "latency_s", "ttft_s", "trace_id", "started_s", "queued_s"})


def without_timing(value: object) -> object:
    """``value`` with every timing field removed, at any depth."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in json_lines(path.read_text("utf-8"))]
