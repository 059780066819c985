"""The Chat Completions request: validated, then translated into the engine's types.

Every field of the OpenAI request is accepted. Sampling fields become
:class:`~moa.types.GenerationParams` (they shape the final answer); vendor
fields, known ones such as ``frequency_penalty`` and unknown ones alike, go into
``params.extra`` and so reach every upstream call; fields about the caller's
account (``user``, ``store``, ``metadata``, ``service_tier``) are accepted and
not forwarded. What a mixture cannot honour (``n`` > 1, tools, logprobs, audio,
non-text content) is a 400 that names the parameter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moa.engine.overrides import RunOverrides
from moa.server.errors import APIError
from moa.types import GenerationParams, Message

__all__ = ["ChatRequest", "MoAOptions", "chat_body_schema", "parse_chat_request"]

# Forwarded to every upstream call: they change how models sample, not who is asking.
_VENDOR_FIELDS = (
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "response_format",
    "reasoning_effort",
    "verbosity",
)
# Accepted and kept on this side: they describe the caller's account, not the generation.
_LOCAL_FIELDS = frozenset(
    {
        "user",
        "store",
        "metadata",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_options",
        "safety_identifier",
        "parallel_tool_calls",
        "stream_options",
        "moderation",
    }
)


class _Lenient(BaseModel):
    # Clients echo assistant messages back with fields such as ``annotations``.
    model_config = ConfigDict(extra="allow")


class ContentPart(_Lenient):
    type: str
    text: str | None = None
    refusal: str | None = None


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    function_call: dict[str, Any] | None = None
    refusal: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class MoAOptions(RunOverrides):
    """The ``moa`` request field: what a MoA-aware client wants beyond the standard answer.

    Besides the progress options it takes every field of
    :class:`~moa.engine.overrides.RunOverrides`, so a request picks its latency mode:
    ``"moa": {"strategy": {"type": "chunked"}}``, ``"moa": {"quorum": 2}``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    progress: bool = False
    """Stream progress chunks (layer started, agent done or failed, layer done)."""
    agent_deltas: bool = False
    """Also stream the intermediate agents' text as it is written (implies ``progress``)."""


class _ChatBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = Field(default=None)
    seed: int | None = None
    n: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    moa: MoAOptions | None = None


def chat_body_schema(ref_prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON schema of a request body, and the schemas it refers to (as ``ref_prefix``
    + name), for the server's OpenAPI document."""
    schema = _ChatBody.model_json_schema(ref_template=ref_prefix + "{model}")
    return schema, schema.pop("$defs", {})


@dataclass(frozen=True)
class ChatRequest:
    """A validated request in the engine's terms."""

    model: str
    messages: tuple[Message, ...]
    params: GenerationParams
    stream: bool = False
    include_usage: bool = False
    progress: bool = False
    agent_deltas: bool = False
    overrides: RunOverrides | None = None
    """How this request runs the mixture (strategy, quorum, deadlines), if the client chose."""


def parse_chat_request(raw: bytes, *, max_messages: int) -> ChatRequest:
    """Validate a request body; raise :class:`APIError` (400) naming the offending parameter."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise APIError.invalid(f"the request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise APIError.invalid(_TOO_DEEP) from exc
    if _depth(data) > _MAX_DEPTH:
        raise APIError.invalid(_TOO_DEEP)
    if not isinstance(data, dict):
        raise APIError.invalid("the request body must be a JSON object")
    messages = data.get("messages")
    if isinstance(messages, list) and len(messages) > max_messages:
        raise APIError.invalid(
            f"too many messages: {len(messages)} (this server accepts at most {max_messages})",
            param="messages",
            code="too_many_messages",
        )
    try:
        body = _ChatBody.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = _param_path(first["loc"])
        raise APIError.invalid(f"invalid {param}: {first['msg']}", param=param) from exc
    _refuse_unsupported(body)
    stop = body.stop
    if isinstance(stop, list) and len(stop) > 4:
        raise APIError.invalid("stop takes at most 4 sequences", param="stop")
    if body.stream_options is not None and not body.stream:
        raise APIError.invalid(
            "stream_options is only allowed when stream is true", param="stream_options"
        )
    options = body.moa or MoAOptions()
    return ChatRequest(
        model=body.model,
        messages=tuple(_message(m, i) for i, m in enumerate(body.messages)),
        params=GenerationParams(
            temperature=body.temperature,
            top_p=body.top_p,
            max_tokens=body.max_completion_tokens or body.max_tokens,
            stop=None if stop is None else ((stop,) if isinstance(stop, str) else tuple(stop)),
            seed=body.seed,
            extra=_vendor_extra(body),
        ),
        stream=bool(body.stream),
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        progress=options.progress or options.agent_deltas,
        agent_deltas=options.agent_deltas,
        overrides=_overrides(options),
    )


_MAX_DEPTH = 64
_TOO_DEEP = f"the request body is nested deeper than {_MAX_DEPTH} levels"


def _depth(value: Any) -> int:
    """How deeply ``value`` nests lists and objects (without recursion of its own)."""
    deepest, level = 0, [(value, 1)]
    while level:
        node, depth = level.pop()
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > _MAX_DEPTH:
                    return depth + 1
                level.append((child, depth + 1))
        deepest = max(deepest, depth)
    return deepest


def _overrides(options: MoAOptions) -> RunOverrides | None:
    chosen = {name: getattr(options, name) for name in RunOverrides.model_fields}
    if all(value is None for value in chosen.values()):
        return None
    return RunOverrides(**chosen)


def _param_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("str", "list[ContentPart]", "list[str]", "dict[str,any]"):
            continue  # pydantic names the union member it tried; the client never wrote it
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def _refuse_unsupported(body: _ChatBody) -> None:
    if body.n not in (None, 1):
        raise APIError.unsupported(
            f"n={body.n} is not supported: a mixture writes one answer per request (use n=1)",
            "n",
        )
    if body.tools or body.functions:
        param = "tools" if body.tools else "functions"
        raise APIError.unsupported(
            "tool calling is not supported by mixtures; send the request without tools", param
        )
    for name, choice in (("tool_choice", body.tool_choice), ("function_call", body.function_call)):
        if choice not in (None, "none", "auto"):
            raise APIError.unsupported(f"{name} needs tools, which mixtures do not support", name)
    if body.logprobs or body.top_logprobs:
        param = "logprobs" if body.logprobs else "top_logprobs"
        raise APIError.unsupported("log probabilities are not available from a mixture", param)
    if body.audio is not None or (body.modalities and set(body.modalities) - {"text"}):
        param = "audio" if body.audio is not None else "modalities"
        raise APIError.unsupported("mixtures answer with text only", param)


def _vendor_extra(body: _ChatBody) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for name in _VENDOR_FIELDS:
        value = getattr(body, name, None)
        if value is None and body.model_extra:
            value = body.model_extra.get(name)
        if value is not None:
            extra[name] = value
    for name, value in (body.model_extra or {}).items():
        if name not in _LOCAL_FIELDS and name not in extra:
            extra[name] = value
    if extra.get("response_format") == {"type": "text"}:
        del extra["response_format"]
    return extra


def _message(message: ChatMessage, index: int) -> Message:
    """One engine message; roles the engine lacks are expressed in text so no turn is lost."""
    text = _content_text(message, index)
    if message.role in ("system", "developer"):
        return Message("system", text, message.name)
    if message.role == "user":
        return Message("user", text, message.name)
    if message.role == "assistant":
        calls = [_describe_call(call.get("function", call)) for call in message.tool_calls or []]
        if message.function_call:
            calls.append(_describe_call(message.function_call))
        if not text and not calls and not message.refusal:
            raise APIError.invalid(
                "an assistant message needs content, refusal or tool_calls",
                param=f"messages[{index}].content",
            )
        parts = [text or message.refusal or "", *calls]
        return Message("assistant", "\n".join(p for p in parts if p), message.name)
    # Tool and function results: the engine has no such role, so they reach models as user turns.
    source = message.tool_call_id or message.name or message.role
    return Message("user", f"[{message.role} result {source}]\n{text}")


def _content_text(message: ChatMessage, index: int) -> str:
    content = message.content
    if content is None:
        if message.role in ("assistant", "function"):
            return ""
        raise APIError.invalid(
            f"a {message.role} message needs content", param=f"messages[{index}].content"
        )
    if isinstance(content, str):
        return content
    if not content:
        raise APIError.invalid(
            "content must not be an empty list", param=f"messages[{index}].content"
        )
    texts: list[str] = []
    for j, part in enumerate(content):
        param = f"messages[{index}].content[{j}]"
        if part.type == "text" and part.text is not None:
            texts.append(part.text)
        elif part.type == "refusal" and part.refusal is not None:
            texts.append(part.refusal)
        elif part.type in ("text", "refusal"):
            raise APIError.invalid(f"a {part.type} part needs its {part.type} field", param=param)
        else:
            raise APIError.unsupported(
                f"content parts of type {part.type!r} are not supported: mixtures take text only",
                f"{param}.type",
            )
    return "\n".join(texts)


def _describe_call(call: dict[str, Any]) -> str:
    name = call.get("name", "?")
    arguments = call.get("arguments", "")
    return f"[called {name}({arguments})]"
