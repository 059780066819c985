"""Any OpenAI-compatible chat endpoint: hosted APIs, vLLM, llama.cpp server, Ollama.

One adapter serves every endpoint; what differs (base URL, key, headers,
extra JSON fields, whether a final assistant message can be continued) comes
from :class:`~moa.providers.settings.ProviderSettings`. The SDK never retries
on its own: retries, backoff and Retry-After belong to the engine, which sees
the typed errors of :mod:`moa.errors` raised here.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import openai
from pydantic import SecretStr

from moa.errors import (
    ConfigError,
    FeatureUnavailableError,
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
    ProviderTimeoutError,
    RateLimitError,
)
from moa.providers.base import Provider
from moa.providers.registry import resolve_api_key
from moa.providers.settings import DEFAULT_KEEPALIVE, ProviderSettings
from moa.types import (
    Completion,
    CompletionChunk,
    CompletionRequest,
    Message,
    Usage,
    estimate_tokens,
)

__all__ = ["DEFAULT_TIMEOUT", "OpenAICompatProvider", "parse_retry_after"]

DEFAULT_TIMEOUT = 600.0
"""Seconds one HTTP request may take when the settings give no ``timeout``."""

_PLACEHOLDER_KEY = "not-needed"
"""Sent to servers that need no key: the SDK insists on one, and without an explicit value it
would fall back to ``OPENAI_API_KEY`` and hand that key to an unrelated server."""

_CHAT_PATH = "/chat/completions"
_RawStream = openai.AsyncStream[object]
_CONTINUE_SERVERS = "vLLM and llama.cpp server (set supports_continue: true for such a provider)"


class OpenAICompatProvider(Provider):
    """Chat completions over HTTP from one OpenAI-compatible base URL.

    The SDK client (and its connection pool) is bound to the event loop that
    created it, so one client is made lazily per running loop: the sync facade
    runs every call on a fresh loop. :meth:`aclose` closes the current loop's
    client and forgets those of loops that are gone.
    """

    def __init__(
        self,
        name: str = "openai",
        *,
        base_url: str,
        api_key: str | SecretStr | None = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        supports_continue: bool = False,
        max_concurrency: int | None = None,
        api_key_env: str | None = None,
        keepalive: float = DEFAULT_KEEPALIVE,
    ) -> None:
        self.name = name
        self.base_url = base_url
        self.timeout = timeout if timeout is not None else DEFAULT_TIMEOUT
        self.headers = dict(headers or {})
        self.extra_body = dict(extra_body or {})
        self.max_concurrency = max_concurrency
        self.keepalive = keepalive
        self.api_key_env = api_key_env
        if isinstance(api_key, str):
            api_key = SecretStr(api_key)
        self._api_key = api_key
        # Provider declares this per class; an HTTP endpoint's ability depends on the server
        # behind it, so here it is per instance (setattr: mypy forbids assigning a ClassVar).
        setattr(self, "supports_continue", supports_continue)  # noqa: B010
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI]
        self._clients = weakref.WeakKeyDictionary()

    @classmethod
    def from_settings(cls, name: str, settings: ProviderSettings) -> OpenAICompatProvider:
        """Build from a ``providers:`` block; a required key that is missing is an error now."""
        if not settings.base_url:
            raise ConfigError(
                f"providers.{name}.base_url is required for an OpenAI-compatible provider "
                "(e.g. http://localhost:8000/v1)"
            )
        return cls(
            name,
            base_url=settings.base_url,
            api_key=resolve_api_key(name, settings),
            timeout=settings.timeout,
            headers=settings.headers,
            extra_body=settings.extra_body,
            supports_continue=settings.supports_continue,
            max_concurrency=settings.max_concurrency,
            keepalive=settings.keepalive,
            api_key_env=settings.api_key_env or f"{name.upper().replace('-', '_')}_API_KEY",
        )

    # -- client per event loop ----------------------------------------------------------

    def _client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            key = self._api_key.get_secret_value() if self._api_key else _PLACEHOLDER_KEY
            client = openai.AsyncOpenAI(
                api_key=key,
                base_url=self.base_url,
                timeout=self.timeout,
                max_retries=0,
                default_headers=self.headers or None,
                http_client=_http_client(self.timeout, self.max_concurrency, self.keepalive),
            )
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        for owner, client in list(self._clients.items()):
            if owner is loop:
                await client.close()
                del self._clients[owner]
            elif owner.is_closed():
                # Its connections cannot be closed from another loop; drop the reference.
                del self._clients[owner]

    # -- requests -----------------------------------------------------------------------

    def _body(self, request: CompletionRequest, *, stream: bool) -> dict[str, Any]:
        """The JSON body: standard fields, then the provider's and the call's extra fields."""
        params = request.params
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [m.to_dict() for m in request.messages],
        }
        for field in ("temperature", "top_p", "max_tokens", "seed"):
            value = getattr(params, field)
            if value is not None:
                body[field] = value
        if params.stop is not None:
            body["stop"] = list(params.stop)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        body.update(self.extra_body)
        body.update(params.extra)
        if request.continue_final:
            if not self.supports_continue:
                raise FeatureUnavailableError(
                    f"provider {self.name!r} cannot continue a final assistant message; "
                    f"servers that can: {_CONTINUE_SERVERS}",
                    provider=self.name,
                    model=request.model,
                )
            body.update(continue_final_message=True, add_generation_prompt=False)
        return body

    # The SDK's generic ``post`` with a ready JSON body and ``cast_to=object`` (raw JSON back)
    # does the same HTTP exchange as ``chat.completions.create`` without re-walking every
    # message through its typed transforms and models: that CPU is per call, on the event
    # loop, and shows up directly as orchestration overhead (see ``moa bench overhead``).

    async def complete(self, request: CompletionRequest) -> Completion:
        body = self._body(request, stream=False)
        try:
            data = await self._client().post(_CHAT_PATH, body=body, cast_to=object)
        except openai.OpenAIError as exc:
            raise self._error(exc, request.model) from exc
        response = data if isinstance(data, dict) else {}
        choice = _first_choice(response)
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else None
        text = text if isinstance(text, str) else ""
        usage = _usage(response.get("usage")) or _estimate(request.messages, text)
        model = response.get("model")
        return Completion(
            text,
            usage,
            choice.get("finish_reason"),
            model if isinstance(model, str) and model else request.model,
        )

    async def stream(self, request: CompletionRequest) -> AsyncIterator[CompletionChunk]:
        body = self._body(request, stream=True)
        usage: Usage | None = None
        finish: str | None = None
        try:
            chunks = await self._client().post(
                _CHAT_PATH, body=body, cast_to=object, stream=True, stream_cls=_RawStream
            )
            async with chunks:
                async for data in chunks:
                    if not isinstance(data, dict):
                        continue
                    usage = _usage(data.get("usage")) or usage
                    choice = _first_choice(data)
                    finish = choice.get("finish_reason") or finish
                    delta = choice.get("delta")
                    text = delta.get("content") if isinstance(delta, dict) else None
                    if isinstance(text, str) and text:
                        yield CompletionChunk(text)
        except openai.OpenAIError as exc:
            raise self._error(exc, request.model) from exc
        yield CompletionChunk("", usage, finish)

    # -- errors -------------------------------------------------------------------------

    def _error(self, exc: openai.OpenAIError, model: str) -> ProviderError:
        where = f"{self.name} ({self.base_url}), model {model!r}"
        chain = _chain(exc)
        # The aiohttp transport reports every failed connect (refused, unknown host) as a
        # connect timeout; the error under it tells them apart.
        refused = any(isinstance(cause, aiohttp.ClientConnectorError) for cause in chain)
        if isinstance(exc, openai.APITimeoutError) and not refused:
            return ProviderTimeoutError(
                self._redact(f"{where}: no response within {self.timeout:g}s"),
                provider=self.name,
                model=model,
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = chain[-1]
            return ProviderConnectionError(
                self._redact(
                    f"{where}: cannot connect ({type(cause).__name__}: {cause}); "
                    "check the base_url and that the server is running"
                ),
                provider=self.name,
                model=model,
            )
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            message = self._redact(f"{where}: HTTP {status}: {_detail(exc)}{self._hint(status)}")
            if status == 429:
                retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
                return RateLimitError(
                    message, provider=self.name, model=model, retry_after=retry_after
                )
            return ProviderStatusError(message, status_code=status, provider=self.name, model=model)
        detail = exc.message if isinstance(exc, openai.APIError) else str(exc)
        return ProviderError(self._redact(f"{where}: {detail}"), provider=self.name, model=model)

    def _hint(self, status: int) -> str:
        if status in (401, 403):
            env = f" in ${self.api_key_env}" if self.api_key_env else ""
            return f" (check the API key{env})"
        if status == 404:
            return " (check the model name and the base_url)"
        if status == 429:
            return " (rate limited)"
        return ""

    def _redact(self, text: str) -> str:
        """Never let the key reach a message, even if a server echoes it back."""
        key = self._api_key.get_secret_value() if self._api_key else ""
        return text.replace(key, "***") if len(key) >= 4 else text


def _http_client(timeout: float, max_concurrency: int | None, keepalive: float) -> Any:
    """The SDK's client on aiohttp's connection pool, sized by the engine's own limit.

    The default httpx pool walks its whole connection list on every request and
    response event, so its CPU per call grows with the number of calls in flight;
    a mixture under load keeps thousands open (``moa bench server``). aiohttp's
    connector does not. Calls per provider are bounded by the engine
    (``max_concurrency``), so the pool sets no lower ceiling of its own: it matches
    that limit, or has none (aiohttp's 0) when the provider has none.

    Idle connections live ``keepalive`` seconds, less than the server's own idle
    timeout: aiohttp hands out the longest-idle connection first, so with equal
    timeouts (the SDK's 5 s against uvicorn's 5 s) a busy pool keeps reusing
    connections the server is closing at that moment, and each such call fails
    and waits for a retry (hundreds of milliseconds in ``moa bench server``).
    """
    # The SDK's own Limits class (httpx or its successor, depending on the SDK version).
    limits = type(openai.DEFAULT_CONNECTION_LIMITS)(
        max_connections=max_concurrency or 0, keepalive_expiry=keepalive
    )
    return openai.DefaultAioHttpClient(timeout=timeout, limits=limits)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the errors under it (the SDK's and the transport's wrappers), outermost first."""
    chain = [exc]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    return chain


def _detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return exc.response.reason_phrase or "error"


def _first_choice(data: dict[str, Any]) -> dict[str, Any]:
    """The choice with index 0 (servers may send usage-only chunks with no choices)."""
    for choice in data.get("choices") or ():
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            return choice
    return {}


def _usage(data: object) -> Usage | None:
    if not isinstance(data, dict):
        return None
    prompt, completion = data.get("prompt_tokens"), data.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion, 1)


def _estimate(messages: tuple[Message, ...], text: str) -> Usage:
    return Usage(sum(estimate_tokens(m.content) for m in messages), estimate_tokens(text), 1)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None
