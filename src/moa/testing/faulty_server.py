"""An OpenAI-compatible server that misbehaves on purpose, for fault tests.

Unlike :class:`~moa.testing.openai_server.FakeOpenAIServer`, it speaks HTTP/1.1
itself over asyncio streams, so it can do what no web framework lets an app do:
reset the connection, say nothing at all, or stop in the middle of a stream.
The model a request names picks its behaviour (one of :data:`FAULTS`); any other
model answers normally:

>>> with FaultyOpenAIServer() as server:                    # doctest: +SKIP
...     base_url = server.base_url                          # model "reset" resets, ...

Faults: ``rate-limit`` (429 with ``Retry-After``), ``server-error`` (500),
``reset`` (the connection is reset once the request is read), ``silent`` (the
request is read and never answered), ``stall`` (a stream, or a body, that stops
after its first part and never goes on), ``truncated`` (the connection closes
in the middle of the answer), ``malformed`` (a chunk, or a body, that is not
JSON), ``empty`` (an answer with no text), ``overflow`` (400: the prompt is
longer than the context window).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import threading
import time
from collections import Counter
from typing import Any

__all__ = ["FAULTS", "FaultyOpenAIServer"]

FAULTS = (
    "rate-limit",
    "server-error",
    "reset",
    "silent",
    "stall",
    "truncated",
    "malformed",
    "empty",
    "overflow",
)
ANSWER = "The answer is 4."


class FaultyOpenAIServer:
    """Serves ``POST /v1/chat/completions`` on 127.0.0.1 with the faults its models name.

    ``requests`` counts the requests each model received.
    """

    def __init__(self, answer: str = ANSWER) -> None:
        self.answer = answer
        self.requests: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._held: set[asyncio.StreamWriter] = set()

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("the server is not running; call start() or use 'with'")
        return f"http://127.0.0.1:{self._port}/v1"

    def start(self, timeout: float = 10.0) -> FaultyOpenAIServer:
        started = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", 0)
            )
            self._port = self._server.sockets[0].getsockname()[1]
            started.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=serve, name="faulty-openai-server", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise RuntimeError("the faulty OpenAI server did not start")
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def close() -> None:
            server.close()
            for writer in list(self._held):
                writer.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = self._server = self._thread = None
        self._port = None

    def __enter__(self) -> FaultyOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one connection ------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._held.add(writer)
        try:
            while True:
                body = await _read_request(reader)
                if body is None:
                    return
                model = str(body.get("model", ""))
                self.requests[model] += 1
                keep = await self._answer(model, bool(body.get("stream")), reader, writer)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._held.discard(writer)
            if not writer.is_closing():
                writer.close()

    async def _answer(
        self, model: str, stream: bool, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request as ``model`` says; False when the connection must end."""
        if model == "rate-limit":
            await _send_error(
                writer, 429, "rate limited", "rate_limit_exceeded", {"Retry-After": "0.05"}
            )
        elif model == "server-error":
            await _send_error(writer, 500, "the server had an error", "server_error")
        elif model == "overflow":
            message = "This model's maximum context length is 4096 tokens; your messages had 9000."
            await _send_error(
                writer, 400, message, "invalid_request_error", code="context_length_exceeded"
            )
        elif model == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        elif model == "silent":
            await reader.read()  # until the client gives up
            return False
        elif stream:
            return await self._stream(model, reader, writer)
        else:
            return await self._whole(model, reader, writer)
        return True

    async def _whole(
        self, model: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        text = "" if model == "empty" else self.answer
        body = json.dumps(_completion(model, text)).encode()
        if model == "malformed":
            body = b'{"id": "chatcmpl-x", "choices": [{"message": {"content": "The ans'
            await _send(writer, 200, body, "application/json")
            return True
        if model in ("stall", "truncated"):
            head = _head(200, "application/json", {"Content-Length": str(len(body))})
            writer.write(head + body[: len(body) // 2])
            await writer.drain()
            if model == "stall":
                await reader.read()
            return False
        await _send(writer, 200, body, "application/json")
        return True

    async def _stream(
        self, model: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        writer.write(_head(200, "text/event-stream", {"Transfer-Encoding": "chunked"}))
        words = [] if model == "empty" else re.findall(r"\S+\s*", self.answer)
        events = [_chunk(model, {"role": "assistant", "content": ""})]
        events += [_chunk(model, {"content": word}) for word in words]
        for n, event in enumerate(events):
            if model in ("stall", "truncated") and n == 2:
                await writer.drain()
                if model == "stall":
                    await reader.read()
                return False
            if model == "malformed" and n == 2:
                event = b"data: {this is not json\n\n"
            writer.write(_http_chunk(event))
            await writer.drain()
        writer.write(_http_chunk(_chunk(model, {}, "stop")))
        writer.write(_http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()
        return True


async def _read_request(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The JSON body of the next request, or None when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    raw = await reader.readexactly(length)
    try:
        body = json.loads(raw)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _head(status: int, media_type: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"Content-Type: {media_type}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _send(writer: asyncio.StreamWriter, status: int, body: bytes, media_type: str) -> None:
    writer.write(_head(status, media_type, {"Content-Length": str(len(body))}) + body)
    await writer.drain()


async def _send_error(
    writer: asyncio.StreamWriter,
    status: int,
    message: str,
    kind: str,
    headers: dict[str, str] | None = None,
    *,
    code: str | None = None,
) -> None:
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})
    head = _head(status, "application/json", {"Content-Length": str(len(body)), **(headers or {})})
    writer.write(head + body.encode())
    await writer.drain()


def _completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-faulty",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split()), "total_tokens": 10},
    }


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-faulty",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _http_chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"
