"""Answering one chat completion: run the mixture, watch the client and the deadline.

The run is raced against the client's disconnect and the server's deadline: a
client that goes away, or a request that runs out of time, cancels the run, and
cancelling :meth:`Mixture.astream` cancels every upstream call still open.

A stream that did not ask for progress sends its headers only with the first
token of the answer, so a failure before that (no quorum, no aggregator) is an
ordinary HTTP error with its status; after that a failure can only be told
inside the stream, as a ``data:`` line holding an OpenAI error object.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any, TypeVar

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from moa.engine.events import AgentDone, AgentFailed, Done, Event, TextDelta
from moa.engine.mixture import Mixture
from moa.engine.result import Result
from moa.errors import MoAError
from moa.history import RunLog
from moa.server.errors import APIError, from_library_error
from moa.server.limits import send_error
from moa.server.metrics import ServerMetrics
from moa.server.responses import openai_usage
from moa.server.schemas import ChatRequest
from moa.server.streaming import ChunkEncoder

__all__ = ["ChatRun", "ChatStream", "ClientGoneError", "race"]

T = TypeVar("T")


class ClientGoneError(Exception):
    """The client disconnected before the answer was complete."""


class ChatRun:
    """One request's run of a mixture, reporting to the metrics as it goes."""

    def __init__(
        self,
        mixture: Mixture,
        request: ChatRequest,
        metrics: ServerMetrics,
        label: str,
        *,
        log: RunLog | None = None,
        parent: object | None = None,
    ) -> None:
        self.mixture = mixture
        self.request = request
        self.metrics = metrics
        self.label = label
        self.started = time.perf_counter()
        self.log = log or RunLog()
        self.capture = self.log.start(
            mixture.spec, request.messages, source="server", parent=parent
        )
        """What the history and the trace will get; ``capture.trace_id`` names the run."""

    def check(self) -> None:
        """Refuse, before any upstream call, a run that cannot start here."""
        try:
            self.mixture.check()
        except MoAError as exc:
            self.metrics.completions.labels(self.label, type(exc).__name__).inc()
            self.log.submit(self.capture.finish(error=exc))
            raise self._api_error(exc) from exc

    def _api_error(self, error: MoAError) -> APIError:
        overrides = self.request.overrides
        chosen = overrides is not None and overrides.strategy is not None
        return from_library_error(error, strategy_param="moa.strategy" if chosen else None)

    async def events(self) -> AsyncGenerator[Event, None]:
        """The mixture's events; library errors come out as :class:`APIError`."""
        outcome = "cancelled"
        first_token = True
        capture = self.capture
        error: MoAError | None = None
        try:
            async for event in self.mixture.astream(
                self.request.messages,
                params=self.request.params,
                agent_deltas=self.request.agent_deltas,
                trace_id=capture.trace_id,
            ):
                capture.observe(event)
                if isinstance(event, AgentDone | AgentFailed):
                    self.metrics.observe_call(event.result)
                elif isinstance(event, TextDelta) and first_token:
                    first_token = False
                    elapsed = time.perf_counter() - self.started
                    self.metrics.ttft_seconds.labels(self.label).observe(elapsed)
                elif isinstance(event, Done):
                    outcome = "ok"  # before the yield: the consumer may stop right there
                yield event
        except MoAError as exc:
            outcome = type(exc).__name__
            error = exc
            raise self._api_error(exc) from exc
        finally:
            self.metrics.completions.labels(self.label, outcome).inc()
            self.log.submit(capture.finish(error=error))

    async def result(self) -> Result:
        events = self.events()
        try:
            async for event in events:
                if isinstance(event, Done):
                    return event.result
        finally:
            await events.aclose()
        raise AssertionError("a run always ends with a Done event")  # pragma: no cover


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def race(work: Coroutine[Any, Any, T], receive: Receive, deadline: float | None) -> T:
    """Await ``work`` unless the client disconnects or ``deadline`` seconds pass first."""
    job: asyncio.Future[T] = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        done, _ = await asyncio.wait(
            (job, watcher), timeout=deadline, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        if not job.done():
            job.cancel()
        watcher.cancel()
        await asyncio.gather(job, watcher, return_exceptions=True)
    if job in done:
        return job.result()
    if watcher in done:
        raise ClientGoneError
    raise APIError(
        504,
        f"the request did not finish within this server's deadline of {deadline:g}s",
        type="timeout_error",
        code="deadline_exceeded",
    )


class ChatStream(Response):
    """The streamed answer of one run as server-sent events."""

    def __init__(
        self,
        run: ChatRun,
        encoder: ChunkEncoder,
        *,
        deadline: float | None,
        headers: dict[str, str],
    ) -> None:
        super().__init__(
            status_code=200,
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no", **headers},
        )
        # The length is unknown: a stream is chunked.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.run = run
        self.encoder = encoder
        self.deadline = deadline
        self._send: Send | None = None
        self._started = False
        self._ended = False
        self._status = 200
        self._on_end: Callable[[int], None] | None = None

    def on_end(self, callback: Callable[[int], None]) -> None:
        """Call ``callback`` with the response's status once the stream has ended."""
        self._on_end = callback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._send = send
        try:
            await race(self._produce(), receive, self.deadline)
        except ClientGoneError:
            self._status = 499
            return
        except APIError as error:
            await self._fail(error)
        finally:
            if self._on_end is not None:
                self._on_end(self._status)

    async def _produce(self) -> None:
        events = self.run.events()
        try:
            if self.run.request.progress:
                await self._begin()
            async for event in events:
                if isinstance(event, TextDelta):
                    if not self._started:
                        await self._begin()
                    await self._write(self.encoder.text(event.text))
                elif isinstance(event, Done):
                    if not self._started:
                        await self._begin()
                    usage = openai_usage(event.result.usage)
                    await self._write(self.encoder.finish(event.result, usage), last=True)
                elif self._started:
                    chunk = self.encoder.event(event)
                    if chunk:
                        await self._write(chunk)
        except APIError as error:
            await self._fail(error)
        finally:
            await events.aclose()

    async def _begin(self) -> None:
        assert self._send is not None
        self._started = True
        start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        await self._send(start)
        await self._write(self.encoder.start())

    async def _write(self, body: bytes, *, last: bool = False) -> None:
        assert self._send is not None
        self._ended = last
        await self._send({"type": "http.response.body", "body": body, "more_body": not last})

    async def _fail(self, error: APIError) -> None:
        assert self._send is not None
        self.run.metrics.observe_error(error.type, error.code)
        if not self._started:
            self._started = self._ended = True
            self._status = error.status
            await send_error(self._send, error)
        elif not self._ended:
            await self._write(self.encoder.error(error), last=True)
