"""Server-sent events of a streamed completion: standard chunks, plus opt-in progress.

The final answer streams as ``chat.completion.chunk`` objects ending with
``data: [DONE]``. Progress of the intermediate layers, when the request asks for
it (``"moa": {"progress": true}``), travels as chunks of the same object type
whose ``choices`` list is empty and whose extra ``moa`` field holds the event:
OpenAI SDKs parse them like the usage chunk and ignore the field, while a
MoA-aware client reads it. (Named SSE events were not used: some SDK versions
hand every event to the chunk parser whatever its name.)
"""

from __future__ import annotations

import json
from typing import Any

from moa.engine.events import (
    AgentDelta,
    AgentDone,
    AgentFailed,
    Event,
    LayerDone,
    LayerStarted,
)
from moa.engine.result import Result
from moa.server.errors import APIError

__all__ = ["DONE", "ChunkEncoder", "finish_reason", "result_summary"]

DONE = b"data: [DONE]\n\n"
_FINISH_REASONS = frozenset({"stop", "length", "content_filter", "tool_calls", "function_call"})


def finish_reason(result: Result) -> str:
    """The aggregator's finish reason in OpenAI's vocabulary (``stop`` when unknown)."""
    reason = result.aggregator.finish_reason
    return reason if reason in _FINISH_REASONS else "stop"


def result_summary(result: Result) -> dict[str, Any]:
    """Trace id and totals of a run, for the last chunk of a stream."""
    return {
        "type": "done",
        "trace_id": result.trace_id,
        "mixture": result.mixture,
        "usage": result.usage.to_dict(),
        "cost": result.cost,
        "latency_s": round(result.latency_s, 4),
        "ttft_s": None if result.ttft_s is None else round(result.ttft_s, 4),
        "failed": [
            {"agent": call.agent, "model": call.model, "error": call.error}
            for call in result.calls()
            if not call.ok
        ],
        "notes": list(result.notes),
    }


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class ChunkEncoder:
    """Turns a run's events into SSE bytes for one response."""

    def __init__(
        self,
        *,
        completion_id: str,
        created: int,
        model: str,
        include_usage: bool = False,
        progress: bool = False,
        agent_deltas: bool = False,
    ) -> None:
        self.include_usage = include_usage
        self.progress = progress
        self.agent_deltas = agent_deltas
        # Every chunk shares this head; content chunks are built by concatenation because
        # they are the hot path of a busy server.
        self._head = (
            f'data: {{"id":{_dumps(completion_id)},"object":"chat.completion.chunk",'
            f'"created":{created},"model":{_dumps(model)}'
        )
        self._text_open = self._head + ',"choices":[{"index":0,"delta":{"content":'
        # No "usage": null on the chunks before the usage chunk: the published schema
        # has no null there, and clients read a missing field the same way.
        self._text_close = '},"logprobs":null,"finish_reason":null}]}\n\n'

    def start(self) -> bytes:
        """The first chunk: the assistant role, no text yet."""
        return (
            self._head
            + ',"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
            + '"logprobs":null,"finish_reason":null}]}\n\n'
        ).encode()

    def text(self, text: str) -> bytes:
        return (self._text_open + _dumps(text) + self._text_close).encode()

    def event(self, event: Event) -> bytes:
        """A progress chunk, or nothing when the client did not ask for this event."""
        if not self.progress:
            return b""
        payload: dict[str, Any]
        if isinstance(event, AgentDelta):
            if not self.agent_deltas:
                return b""
            payload = event.to_dict()
        elif isinstance(event, LayerStarted | AgentDone | AgentFailed):
            payload = event.to_dict()
        elif isinstance(event, LayerDone):
            # The agents were each announced already; repeat only the tally.
            layer = event.layer
            payload = {
                "type": "layer_done",
                "layer": layer.index,
                "ok": len(layer.answers),
                "failed": len(layer.failures),
            }
        else:
            return b""
        return self._progress(payload)

    def _progress(self, payload: dict[str, Any]) -> bytes:
        return (self._head + ',"choices":[],"moa":' + _dumps(payload) + "}\n\n").encode()

    def finish(self, result: Result, usage: dict[str, int]) -> bytes:
        """The closing chunks: finish reason (with the run's summary), usage, ``[DONE]``."""
        out = (
            self._head
            + ',"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":'
            + _dumps(finish_reason(result))
            + '}],"moa":'
            + _dumps(result_summary(result))
            + "}\n\n"
        )
        if self.include_usage:
            out += self._head + ',"choices":[],"usage":' + _dumps(usage) + "}\n\n"
        return out.encode() + DONE

    @staticmethod
    def error(error: APIError) -> bytes:
        """An error after the stream began: OpenAI SDKs raise it as an APIError."""
        return b"data: " + error.json_bytes() + b"\n\n"
