"""Answering one batch item: the code both engines run, so both give the same lines.

A request body is validated and translated exactly as the server does
(:func:`~moa.server.schemas.parse_chat_request`), the mixture runs it, and the
answer is the server's ``chat.completion`` body
(:func:`~moa.server.responses.completion_body`) with its ``moa`` field. What
the server would answer with an HTTP error becomes that status and error body.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moa.batch.inputs import BatchItem, InputKind
from moa.config import MixtureConfig, build_mixture
from moa.engine.mixture import Mixture
from moa.errors import MoAError
from moa.server.errors import APIError, from_library_error
from moa.server.responses import completion_body
from moa.server.schemas import parse_chat_request

__all__ = [
    "BatchWorker",
    "BatchWorkers",
    "ConfigMixture",
    "MixtureFactory",
    "Outcome",
    "answer_item",
    "dumps",
    "outcome",
    "unreadable_record",
]

MixtureFactory = Callable[[], Mixture]
"""Builds the mixture where the work runs (in this process, or once in each Ray actor).

It must be picklable for ``--engine ray``: a :class:`ConfigMixture`, or a
module-level function.
"""
_MAX_MESSAGES = 100_000


@dataclass(frozen=True)
class ConfigMixture:
    """A mixture from a validated config, with every call going through the call cache."""

    config: MixtureConfig
    cache: Path | None = None
    """The SQLite call cache (``None``: call every model anew)."""

    def __call__(self) -> Mixture:
        if self.cache is None:
            return build_mixture(self.config)
        from moa.providers.cache import CachingRegistry, SQLiteCallStore

        store = SQLiteCallStore(self.cache.expanduser())
        registry = CachingRegistry(self.config.providers, self.config.local, store=store)
        return build_mixture(self.config, registry)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


async def _respond(mixture: Mixture, item: BatchItem) -> tuple[int, dict[str, Any]]:
    assert item.request is not None
    try:
        chat = parse_chat_request(item.request.encode("utf-8"), max_messages=_MAX_MESSAGES)
    except APIError as refused:
        return refused.status, refused.body()
    chosen = mixture if chat.overrides is None else mixture.variant(chat.overrides)
    try:
        result = await chosen.arun(list(chat.messages), params=chat.params)
    except MoAError as exc:
        strategy = chat.overrides is not None and chat.overrides.strategy is not None
        failed = from_library_error(exc, strategy_param="moa.strategy" if strategy else None)
        return failed.status, failed.body()
    except Exception as exc:  # one request's surprise must not end the whole batch
        crashed = APIError(500, f"{type(exc).__name__}: {exc}", type="server_error")
        return crashed.status, crashed.body()
    body = completion_body(
        result,
        completion_id=f"chatcmpl-{_digest(item.key)}",
        created=int(time.time()),
        model=mixture.name,
    )
    return 200, body


def unreadable_record(item: BatchItem, kind: InputKind) -> dict[str, Any]:
    """The output record of a line that could not become a request (no model is called)."""
    if kind == "table":
        body = {"error": {"message": item.error, "code": "invalid_request_line"}}
        return _table_record(item, 400, body)
    return {
        "id": f"batch_req_{_digest(item.key)}",
        "custom_id": item.custom_id,
        "response": None,
        "error": {"code": "invalid_request_line", "message": item.error},
    }


async def answer_item(mixture: Mixture, item: BatchItem, kind: InputKind) -> dict[str, Any]:
    """The output record of ``item``: a Batch API output line, or a table row's new columns."""
    if item.request is None:
        return unreadable_record(item, kind)
    status, body = await _respond(mixture, item)
    if kind == "table":
        return _table_record(item, status, body)
    return {
        "id": f"batch_req_{_digest(item.key)}",
        "custom_id": item.custom_id,
        "response": {"status_code": status, "request_id": f"req_{_digest(item.key)}", "body": body},
        "error": None,
    }


def _table_record(item: BatchItem, status: int, body: dict[str, Any]) -> dict[str, Any]:
    usage = body.get("usage") or {}
    error = body.get("error")
    return {
        "row": item.index,
        "status": status,
        "answer": body["choices"][0]["message"]["content"] if status == 200 else None,
        "error": error.get("message") if isinstance(error, dict) else None,
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "total_tokens": usage.get("total_tokens"),
        "cost": (body.get("moa") or {}).get("cost"),
    }


class BatchWorker:
    """Answers batch items with one mixture (see :class:`~moa.batch.engine.Worker`)."""

    def __init__(self, mixture: Mixture, kind: InputKind) -> None:
        self.mixture = mixture
        self.kind: InputKind = kind

    async def answer(self, job: BatchItem) -> dict[str, Any]:
        return await answer_item(self.mixture, job, self.kind)

    async def aclose(self) -> None:
        await self.mixture.aclose()


@dataclass(frozen=True)
class BatchWorkers:
    """Builds a :class:`BatchWorker` where the work runs (picklable when ``factory`` is)."""

    factory: MixtureFactory
    kind: InputKind

    def __call__(self) -> BatchWorker:
        mixture = self.factory()
        mixture.check()
        return BatchWorker(mixture, self.kind)


@dataclass(frozen=True)
class Outcome:
    """What the driver needs to know of one output record."""

    key: str | None
    """The item key the record finishes, when a rerun should keep it (else ``None``)."""
    ok: bool
    tokens: int
    cost: float | None


def outcome(kind: InputKind, record: dict[str, Any]) -> Outcome:
    """Read back a record: did it succeed, is it final, what did it use.

    A record is final (kept by a rerun) when the request was answered, or refused
    for a reason that another try would not change (a 4xx status). Upstream
    failures (5xx) and unreadable lines are tried or reported again.
    """
    if kind == "table":
        status = int(record.get("status") or 0)
        key = f"row-{record.get('row')}" if 0 < status < 500 else None
        return Outcome(key, status == 200, int(record.get("total_tokens") or 0), record.get("cost"))
    response = record.get("response")
    if not isinstance(response, dict):
        return Outcome(None, False, 0, None)
    status = int(response.get("status_code") or 0)
    body = response.get("body") or {}
    tokens = int((body.get("usage") or {}).get("total_tokens") or 0)
    cost = (body.get("moa") or {}).get("cost")
    key = record.get("custom_id") if 0 < status < 500 else None
    return Outcome(key if isinstance(key, str) else None, status == 200, tokens, cost)


def dumps(record: dict[str, Any]) -> str:
    """One output line (no newline)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
