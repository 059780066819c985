"""A stand-in for llama.cpp in the local provider's scheduling tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from moa.providers.local_model import Generation, LocalModel
from moa.types import Message


class StandIn:
    """Replaces LocalModel.load/generate: emits tokens at a fixed pace, records overlap."""

    def __init__(self, tokens: int = 10, token_s: float = 0.01) -> None:
        self.tokens = tokens
        self.token_s = token_s
        self.lock = threading.Lock()
        self.running: dict[str, int] = {}
        self.max_total = 0
        self.max_per_model = 0
        self.produced = 0
        self.stopped = threading.Event()
        self.error: BaseException | None = None

    def generate(
        self,
        model: LocalModel,
        run: Generation,
        messages: Sequence[Message],
        kwargs: Mapping[str, Any],
        *,
        continue_final: bool,
    ) -> Iterator[tuple[str, str | None]]:
        with self.lock:
            self.running[model.label] = self.running.get(model.label, 0) + 1
            self.max_total = max(self.max_total, sum(self.running.values()))
            self.max_per_model = max(self.max_per_model, self.running[model.label])
        run.prompt_tokens = 7
        try:
            if self.error is not None:
                raise self.error
            for n in range(self.tokens):
                time.sleep(self.token_s)
                self.produced += 1
                run.completion_tokens += 1
                yield f"t{n} ", None
            yield "", "length"
        finally:
            with self.lock:
                self.running[model.label] -= 1
            self.stopped.set()


def install(monkeypatch: pytest.MonkeyPatch, fake: StandIn) -> None:
    """Route LocalModel's loading and generation (and batches, if ``fake`` has them) to it."""
    pytest.importorskip("llama_cpp")
    monkeypatch.setattr(LocalModel, "load", lambda self: None)
    monkeypatch.setattr(LocalModel, "generate", lambda self, *a, **k: fake.generate(self, *a, **k))
    batch = getattr(fake, "generate_batch", None)
    if batch is not None:
        monkeypatch.setattr(
            LocalModel, "generate_batch", lambda self, *a, **k: batch(self, *a, **k)
        )
