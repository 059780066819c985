"""Fake providers for tests: scripted or function-backed, with delays and failures.

>>> fake = FakeProvider(replies={"a": "four"})
>>> registry = ProviderRegistry().add("fake", fake)  # doctest: +SKIP

Every call is recorded in ``fake.calls``; ``fake.max_in_flight`` tells how many
calls overlapped at most, which proves (or disproves) concurrency.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from moa.providers.base import Provider
from moa.types import CompletionChunk, CompletionRequest, Usage, estimate_tokens

__all__ = ["FakeProvider", "FunctionProvider", "Reply"]

Reply = str | BaseException
ReplyFunction = Callable[[CompletionRequest], "str | Awaitable[str]"]


@dataclass
class _Timing:
    first_token_delay: float = 0.0
    token_delay: float = 0.0


class FakeProvider(Provider):
    """Answers from a script: per model, a queue of replies (text or an exception to raise).

    ``replies[model]`` may be one string (always answered) or a list consumed in
    order, whose last element is then repeated. An exception in the list is
    raised for that call, which is how failures and retries are scripted.
    Models without a script answer ``default.format(model=..., n=...)``.
    """

    supports_continue = True

    def __init__(
        self,
        name: str = "fake",
        *,
        replies: Mapping[str, Reply | Iterable[Reply]] | None = None,
        default: str = "answer from {model}",
        delay: float | Mapping[str, float] = 0.0,
        token_delay: float | Mapping[str, float] = 0.0,
        max_concurrency: int | None = None,
    ) -> None:
        self.name = name
        self.max_concurrency = max_concurrency
        self.default = default
        self._delay = delay
        self._token_delay = token_delay
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        for model, reply in (replies or {}).items():
            self.enqueue(model, reply)
        self.calls: list[CompletionRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.cancelled = 0

    def enqueue(self, model: str, replies: Reply | Iterable[Reply]) -> None:
        """Add replies for ``model`` to its script."""
        if isinstance(replies, (str, BaseException)):
            self._scripts[model].append(replies)
        else:
            self._scripts[model].extend(replies)

    def script(self, model: str, replies: Reply | Iterable[Reply]) -> None:
        """Replace the script of ``model``."""
        self._scripts.pop(model, None)
        self.enqueue(model, replies)

    def calls_for(self, model: str) -> list[CompletionRequest]:
        return [c for c in self.calls if c.model == model]

    def _timing(self, model: str) -> _Timing:
        def pick(value: float | Mapping[str, float]) -> float:
            return value.get(model, 0.0) if isinstance(value, Mapping) else value

        return _Timing(pick(self._delay), pick(self._token_delay))

    def _next_reply(self, request: CompletionRequest) -> Reply:
        script = self._scripts.get(request.model)
        if script:
            return script.popleft() if len(script) > 1 else script[0]
        return self.default.format(model=request.model, n=len(self.calls))

    async def _text(self, request: CompletionRequest) -> str:
        reply = self._next_reply(request)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def stream(self, request: CompletionRequest) -> AsyncIterator[CompletionChunk]:
        self.calls.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            timing = self._timing(request.model)
            if timing.first_token_delay:
                await asyncio.sleep(timing.first_token_delay)
            text = await self._text(request)
            pieces = _split_tokens(text)
            limit = request.params.max_tokens
            if limit is not None:
                pieces = pieces[:limit]
            for index, piece in enumerate(pieces):
                if index and timing.token_delay:
                    await asyncio.sleep(timing.token_delay)
                yield CompletionChunk(piece)
            finish = "length" if limit is not None and len(_split_tokens(text)) > limit else "stop"
            yield CompletionChunk(
                "",
                Usage(
                    sum(estimate_tokens(m.content) for m in request.messages),
                    len(pieces),
                    1,
                ),
                finish,
            )
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1


class FunctionProvider(FakeProvider):
    """Answers with ``function(request)`` (sync or async), e.g. to echo the references back."""

    def __init__(self, function: ReplyFunction, name: str = "fn", **kwargs: object) -> None:
        super().__init__(name, **kwargs)  # type: ignore[arg-type]
        self.function = function

    async def _text(self, request: CompletionRequest) -> str:
        result = self.function(request)
        if inspect.isawaitable(result):
            result = await result
        return str(result)


def _split_tokens(text: str) -> list[str]:
    """Split text into word-like pieces that concatenate back to ``text``."""
    pieces: list[str] = []
    current = ""
    for char in text:
        current += char
        if char == " ":
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    return pieces
