"""The ASGI layer in front of every route: metrics, bearer keys, body size, concurrency.

It is plain ASGI rather than a framework middleware because it runs on every
request of a busy server and must also see streamed responses to their end.
"""

from __future__ import annotations

import hmac
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moa.server.errors import APIError
from moa.server.metrics import ServerMetrics
from moa.server.settings import ServerSettings

__all__ = ["CHAT_PATH", "RUNS_PATH", "RequestGuard", "route_label", "send_error"]

CHAT_PATH = "/v1/chat/completions"
RUNS_PATH = "/v1/moa/runs"
_ROUTES = {CHAT_PATH, "/v1/models", "/healthz", "/metrics", "/"}


def route_label(path: str) -> str:
    """A bounded label for a request path (raw paths would explode the metric's series)."""
    if path in _ROUTES:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{model}"
    if path.startswith("/static/"):
        return "/static/{file}"
    if path == RUNS_PATH:
        return path
    if path.startswith(RUNS_PATH + "/"):
        return RUNS_PATH + "/{id}"
    return "other"


class RequestGuard:
    """Counts and times requests; refuses unauthenticated, oversized and excess ones."""

    def __init__(self, app: ASGIApp, settings: ServerSettings, metrics: ServerMetrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self._keys = [key.get_secret_value().encode() for key in settings.api_keys]
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        started = time.perf_counter()
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        is_chat = path == CHAT_PATH
        try:
            refusal = self._refusal(scope, path)
            if (
                refusal is None
                and is_chat
                and self.in_flight >= self.settings.max_concurrent_requests
            ):
                refusal = APIError(
                    429,
                    f"the server is answering {self.in_flight} requests, its limit; retry shortly",
                    type="rate_limit_error",
                    code="concurrency_limit_exceeded",
                    headers={"retry-after": "1"},
                )
            if refusal is not None:
                self.metrics.observe_error(refusal.type, refusal.code)
                await send_error(send_and_watch, refusal)
                return
            if is_chat:
                self.in_flight += 1
                self.metrics.in_flight.inc()
            try:
                await self.app(scope, self._limited(receive), send_and_watch)
            finally:
                if is_chat:
                    self.in_flight -= 1
                    self.metrics.in_flight.dec()
        finally:
            label = route_label(path)
            self.metrics.requests.labels(label, str(status)).inc()
            self.metrics.request_seconds.labels(label).observe(time.perf_counter() - started)

    def _refusal(self, scope: Scope, path: str) -> APIError | None:
        if self._keys and path.startswith("/v1/"):
            error = self._auth_error(scope)
            if error is not None:
                return error
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return APIError.invalid("the Content-Length header is not a number")
                if length > self.settings.max_body_bytes:
                    return self._too_large()
        return None

    def _auth_error(self, scope: Scope) -> APIError | None:
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = token.strip()
        if not given:
            message = "no API key given: send the header 'Authorization: Bearer <key>'"
        else:
            matched = False
            for key in self._keys:  # compare with every key, so timing says nothing
                matched |= hmac.compare_digest(given, key)
            if matched:
                return None
            message = "the API key is not valid for this server"
        return APIError(
            401,
            message,
            type="authentication_error",
            code="invalid_api_key",
            headers={"www-authenticate": "Bearer"},
        )

    def _too_large(self) -> APIError:
        return APIError(
            413,
            f"the request body is larger than this server's limit of "
            f"{self.settings.max_body_bytes} bytes",
            code="request_too_large",
        )

    def _limited(self, receive: Receive) -> Receive:
        """``receive`` that stops a body without Content-Length once it passes the limit."""
        limit = self.settings.max_body_bytes
        seen = 0

        async def receive_limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise self._too_large()
            return message

        return receive_limited


async def send_error(send: Send, error: APIError) -> None:
    """Send ``error`` as a complete JSON response."""
    body = error.json_bytes()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.encode(), v.encode()) for k, v in error.headers.items()),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
