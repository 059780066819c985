"""The provider seam: how the engine talks to one model backend.

A backend implements at least one of :meth:`Provider.complete` and
:meth:`Provider.stream`; the other is derived. Backends that can really stream
should implement :meth:`Provider.stream` so that the final answer reaches the
user token by token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable
from typing import ClassVar

from moa.types import Completion, CompletionChunk, CompletionRequest, Usage

__all__ = ["Provider"]


class Provider:
    """A model backend reachable under a provider name such as ``together`` or ``local``."""

    name: str = "provider"
    max_concurrency: int | None = None
    """How many calls to this provider may run at once (``None``: unlimited), counted
    separately for each :meth:`concurrency_key`."""
    supports_continue: ClassVar[bool] = False
    """Whether ``CompletionRequest.continue_final`` is honoured."""
    prefers_streaming: ClassVar[bool] = False
    """Streaming costs nothing extra here (in-process models): the engine then always streams,
    so that timeouts measure stalls rather than answer length and stopped calls keep text."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.complete is Provider.complete and cls.stream is Provider.stream:
            raise TypeError(f"{cls.__name__} must implement complete() or stream()")

    def concurrency_key(self, request: CompletionRequest) -> Hashable:
        """What ``max_concurrency`` counts calls by; the same for every call by default."""
        return None

    async def complete(self, request: CompletionRequest) -> Completion:
        """Answer ``request`` in one piece (derived from :meth:`stream` by default)."""
        parts: list[str] = []
        usage: Usage | None = None
        finish: str | None = None
        async for chunk in self.stream(request):
            parts.append(chunk.text)
            usage = chunk.usage or usage
            finish = chunk.finish_reason or finish
        return Completion("".join(parts), usage or Usage(calls=1), finish, request.model)

    async def stream(self, request: CompletionRequest) -> AsyncIterator[CompletionChunk]:
        """Answer ``request`` chunk by chunk (one chunk by default, from :meth:`complete`)."""
        completion = await self.complete(request)
        yield CompletionChunk(completion.text, completion.usage, completion.finish_reason)

    def check_model(self, model: str) -> None:
        """Raise the error a call to ``model`` would fail with for want of setup, if any.

        Only what is cheap to tell without a call and without loading anything
        (a local model file that is not there); by default nothing. The engine
        asks it before a mixture's first call, and a server for every mixture it
        lists.
        """

    async def aclose(self) -> None:
        """Release resources bound to the running event loop (e.g. HTTP connections).

        The provider must stay usable afterwards, on this or another event loop:
        the sync facade runs each call on a fresh loop and closes in between.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
