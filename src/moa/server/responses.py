"""Non-streamed response bodies in the OpenAI shape."""

from __future__ import annotations

from typing import Any

from moa.engine.result import Result
from moa.server.streaming import finish_reason
from moa.types import Usage

__all__ = ["completion_body", "openai_usage"]


def openai_usage(usage: Usage) -> dict[str, int]:
    """Token totals as OpenAI reports them (the call count lives under ``moa``)."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def completion_body(
    result: Result, *, completion_id: str, created: int, model: str
) -> dict[str, Any]:
    """A ``chat.completion`` object; the extra ``moa`` field holds every call of the run."""
    details = result.to_dict()
    del details["output"]  # it is the message content already
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.output, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason(result),
            }
        ],
        "usage": openai_usage(result.usage),
        "moa": details,
    }
