"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests and benchmarks.

>>> with FakeOpenAIServer({"a": ModelBehavior(text="four")}) as server:  # doctest: +SKIP
...     provider = OpenAICompatProvider("fake", base_url=server.base_url)

Each model behaves as its :class:`ModelBehavior` says: what it answers, how
fast, and which errors it returns first. Timing uses ``asyncio.sleep`` on the
server's own event loop (a background thread), so hundreds of concurrent
streams cost timers, not threads. Needs the ``server`` extra (starlette, uvicorn).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "moa.testing.FakeOpenAIServer needs starlette and uvicorn: "
        "pip install 'mixture-of-agents[server]'"
    ) from exc

__all__ = ["FakeOpenAIServer", "ModelBehavior", "RequestRecord"]

TextSource = str | Callable[[dict[str, Any]], str]


@dataclass
class ModelBehavior:
    """How one fake model answers.

    ``text`` is the reply (or a function of the request body). Non-streaming
    replies take ``latency`` seconds when set, else ``first_token_delay`` plus
    the tokens at ``tokens_per_second``. Streams send the first token after
    ``first_token_delay``, then one token every ``1/tokens_per_second`` seconds;
    with ``tokens_per_second=None`` and ``latency`` set the tokens are spread so
    that the last arrives at ``latency``, otherwise they all come at once.
    ``failures`` are answered, in order, to the first calls of this model:
    ``(status_code, retry_after_seconds_or_None)``. ``require_key`` makes the
    model answer 401 unless the request carries ``Authorization: Bearer <key>``.
    ``echo_key`` puts the request's ``Authorization`` header into the message of
    every scripted failure, as a misbehaving proxy might. ``failure_rate`` answers
    that share of the calls after the scripted ``failures`` with a 500, at random
    (from a generator seeded by the server, so a run can be repeated).
    """

    text: TextSource = "This is the fake server's answer."
    first_token_delay: float = 0.0
    tokens_per_second: float | None = None
    latency: float | None = None
    failures: list[tuple[int, float | None]] = field(default_factory=list)
    require_key: str | None = None
    echo_key: bool = False
    failure_rate: float = 0.0

    def reply(self, body: dict[str, Any]) -> str:
        return self.text(body) if callable(self.text) else self.text


@dataclass(frozen=True)
class RequestRecord:
    """One chat request as the server handled it (times are ``time.perf_counter()``)."""

    model: str
    stream: bool
    status: int
    started: float
    finished: float
    client_port: int = 0
    """The client's TCP port: calls that share a kept-alive connection share it."""

    @property
    def duration(self) -> float:
        return self.finished - self.started


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    429: "rate_limit_exceeded",
}


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def split_tokens(text: str) -> list[str]:
    """Word-like tokens (a word with its trailing spaces) that join back to ``text``."""
    return re.findall(r"\S+\s*|\s+", text)


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(max(1, len(str(m.get("content", ""))) // 4) for m in messages)


class FakeOpenAIServer:
    """Serves ``POST /v1/chat/completions`` and ``GET /v1/models`` on an ephemeral port.

    ``models`` maps model names to behaviours; other names use ``default``,
    or get 404 when ``models`` is given without a default. Use as a context
    manager or call :meth:`start` / :meth:`stop`. ``requests`` holds every
    chat request body received; ``records`` how each was handled and when.

    ``max_concurrent`` caps the chat calls handled at once, as a real server's
    batch slots do: a call past it waits for a free slot, then takes its usual
    time from that moment (its record starts there too). A stream holds its
    slot until it ends.
    """

    def __init__(
        self,
        models: Mapping[str, ModelBehavior] | None = None,
        default: ModelBehavior | None = None,
        *,
        max_concurrent: int | None = None,
    ) -> None:
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1 (or None: no limit)")
        self.max_concurrent = max_concurrent
        self._slots: asyncio.Semaphore | None = None
        self.models: dict[str, ModelBehavior] = dict(models or {})
        self.default = default if default is not None or models else ModelBehavior()
        self.requests: list[dict[str, Any]] = []
        self.records: list[RequestRecord] = []
        self._calls: defaultdict[str, int] = defaultdict(int)
        self._random = random.Random(0)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._list_models, methods=["GET"]),
            ]
        )

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("the server is not running; call start() or use 'with'")
        return f"http://127.0.0.1:{self._port}/v1"

    def start(self, timeout: float = 10.0) -> FakeOpenAIServer:
        if self._server is not None:
            return self
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="asyncio",
            timeout_graceful_shutdown=1,
            backlog=4096,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="fake-openai-server", daemon=True)
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.005)
        self._port = server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=10)
        self._port = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- handlers -----------------------------------------------------------------------

    def behavior(self, model: str) -> ModelBehavior | None:
        return self.models.get(model, self.default)

    async def _list_models(self, request: Request) -> Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "moa"} for m in self.models]
        return JSONResponse({"object": "list", "data": data})

    async def _chat(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "the request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        self.requests.append(body)
        model = str(body.get("model", ""))
        stream = bool(body.get("stream"))
        port = request.client.port if request.client is not None else 0
        response = self._refusal(request, body, model)
        if response is not None:
            self.records.append(
                RequestRecord(
                    model, stream, response.status_code, started, time.perf_counter(), port
                )
            )
            return response
        behavior = self.behavior(model)
        assert behavior is not None
        text, finish = self._reply_text(behavior, body)
        tokens = split_tokens(text)
        slots = self._admission()
        if slots is not None:
            await slots.acquire()
            started = time.perf_counter()
        if stream:
            events = self._events(behavior, body, tokens, finish, started, port)
            return StreamingResponse(
                events if slots is None else _holding(slots, events),
                media_type="text/event-stream",
            )
        try:
            await _sleep_until(started + _total_time(behavior, len(tokens)))
        finally:
            if slots is not None:
                slots.release()
        completion = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                }
            ],
            "usage": _usage(body, tokens),
        }
        self.records.append(RequestRecord(model, False, 200, started, time.perf_counter(), port))
        return JSONResponse(completion)

    def _admission(self) -> asyncio.Semaphore | None:
        """The slots of ``max_concurrent`` (made on the server's own event loop)."""
        if self.max_concurrent is not None and self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrent)
        return self._slots

    def _refusal(self, request: Request, body: dict[str, Any], model: str) -> Response | None:
        """The error answer this request gets, if any."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' must be a non-empty list")
        behavior = self.behavior(model)
        if behavior is None:
            return _error(404, f"The model '{model}' does not exist")
        if behavior.require_key is not None:
            expected = f"Bearer {behavior.require_key}"
            if request.headers.get("authorization") != expected:
                return _error(401, "Incorrect API key provided.")
        calls = self._calls[model]
        self._calls[model] = calls + 1
        if calls < len(behavior.failures):
            status, retry_after = behavior.failures[calls]
            headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
            message = f"scripted failure {calls + 1} of model '{model}'"
            if behavior.echo_key:
                message += f" (request sent {request.headers.get('authorization')!r})"
            return _error(status, message, headers)
        if behavior.failure_rate and self._random.random() < behavior.failure_rate:
            return _error(500, f"random failure of call {calls + 1} of model '{model}'")
        if body.get("continue_final_message") and messages[-1].get("role") != "assistant":
            return _error(400, "continue_final_message needs a final assistant message")
        return None

    @staticmethod
    def _reply_text(behavior: ModelBehavior, body: dict[str, Any]) -> tuple[str, str]:
        text = behavior.reply(body)
        if body.get("continue_final_message"):
            prefix = str(body["messages"][-1].get("content", ""))
            if text.startswith(prefix):
                text = text[len(prefix) :]
        finish = "stop"
        stop = body.get("stop")
        for marker in [stop] if isinstance(stop, str) else stop or []:
            if marker and marker in text:
                text = text[: text.index(marker)]
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(max_tokens, int):
            tokens = split_tokens(text)
            if len(tokens) > max_tokens:
                text, finish = "".join(tokens[:max_tokens]), "length"
        return text, finish

    async def _events(
        self,
        behavior: ModelBehavior,
        body: dict[str, Any],
        tokens: list[str],
        finish: str,
        started: float,
        port: int,
    ) -> AsyncIterator[bytes]:
        model = str(body.get("model", ""))
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        def event(delta: dict[str, Any], reason: str | None = None) -> bytes:
            chunk = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
            }
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        pending = [event({"role": "assistant", "content": ""})]
        times = _token_times(behavior, len(tokens))
        for token, due in zip(tokens, times, strict=True):
            if started + due > time.perf_counter() and pending:
                yield b"".join(pending)
                pending = []
            await _sleep_until(started + due)
            pending.append(event({"content": token}))
        pending.append(event({}, finish))
        options = body.get("stream_options") or {}
        if isinstance(options, dict) and options.get("include_usage"):
            usage = {"id": ident, "object": "chat.completion.chunk", "created": created}
            usage.update(model=model, choices=[], usage=_usage(body, tokens))
            pending.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
        pending.append(b"data: [DONE]\n\n")
        self.records.append(RequestRecord(model, True, 200, started, time.perf_counter(), port))
        yield b"".join(pending)


async def _holding(slots: asyncio.Semaphore, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``events``, giving the slot back when the stream ends (or the client leaves)."""
    try:
        async for chunk in events:
            yield chunk
    finally:
        slots.release()


def _usage(body: dict[str, Any], tokens: list[str]) -> dict[str, int]:
    prompt = _prompt_tokens(body.get("messages") or [])
    return {
        "prompt_tokens": prompt,
        "completion_tokens": len(tokens),
        "total_tokens": prompt + len(tokens),
    }


def _total_time(behavior: ModelBehavior, count: int) -> float:
    if behavior.latency is not None:
        return behavior.latency
    if behavior.tokens_per_second:
        return behavior.first_token_delay + count / behavior.tokens_per_second
    return behavior.first_token_delay


def _token_times(behavior: ModelBehavior, count: int) -> list[float]:
    """Seconds after the request at which each streamed token is due."""
    first = behavior.first_token_delay
    if behavior.tokens_per_second:
        return [first + i / behavior.tokens_per_second for i in range(count)]
    if behavior.latency is not None and count > 1:
        step = max(0.0, behavior.latency - first) / (count - 1)
        return [first + i * step for i in range(count)]
    if behavior.latency is not None:
        return [max(first, behavior.latency)] * count
    return [first] * count


async def _sleep_until(moment: float) -> None:
    delay = moment - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
