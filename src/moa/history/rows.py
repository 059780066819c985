"""A finished run as table rows, and a stored run read back from them.

Rows are made in the history's writer thread, never on a request's path.
Reading rebuilds the engine's own :class:`~moa.engine.result.Result`, so a
stored run renders with the very code that renders a live one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from moa.config import MixtureConfig
from moa.engine.result import AgentResult, LayerResult, Result
from moa.engine.spec import MixtureSpec
from moa.history.capture import FinishedRun
from moa.history.settings import ContentPolicy
from moa.types import GenerationParams, Message, Usage

__all__ = [
    "CALL_COLUMNS",
    "RUN_COLUMNS",
    "StoredRun",
    "call_rows",
    "mixture_hash",
    "mixture_yaml",
    "run_row",
    "setup_of",
]

RUN_COLUMNS = (
    "id", "created", "source", "mixture", "mixture_hash", "mixture_yaml", "trace_id",
    "question", "output", "conversation", "prompt_tokens", "completion_tokens", "calls",
    "cost", "latency_s", "ttft_s", "failures", "error", "cancelled", "content",
    "replay_of", "layers", "notes", "models",
)  # fmt: skip
CALL_COLUMNS = (
    "run_id", "position", "kind", "layer", "idx", "agent", "role", "model", "messages",
    "params", "output", "error", "error_type", "prompt_tokens", "completion_tokens",
    "usage_calls", "latency_s", "ttft_s", "attempts", "finish_reason", "cost", "partial", "notes",
    "started_at",
)  # fmt: skip


def mixture_yaml(spec: MixtureSpec, setup: Mapping[str, Any] | None = None) -> str:
    """The mixture as a config file would write it (settings left at their defaults omitted).

    ``setup`` adds the config's ``providers:`` and ``local:`` blocks.
    """
    data = spec.model_dump(mode="json", exclude_defaults=True)
    data = {"name": spec.name, **data, **(setup or {})}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def setup_of(config: MixtureConfig) -> dict[str, Any]:
    """The config's ``providers:`` and ``local:`` blocks, without keys or headers."""
    setup: dict[str, Any] = {}
    providers = {
        name: settings.model_dump(
            mode="json", exclude_defaults=True, exclude={"api_key", "headers"}
        )
        for name, settings in config.providers.items()
    }
    if providers:
        setup["providers"] = providers
    if "local" in config.model_fields_set:
        setup["local"] = config.local.model_dump(mode="json", exclude_defaults=True)
    return setup


def mixture_hash(spec: MixtureSpec) -> str:
    """A short digest of everything in the mixture: equal hashes, equal mixtures."""
    text = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _question(messages: Sequence[Message]) -> str:
    users = [m.content for m in messages if m.role == "user"]
    return users[-1] if users else ""


def _params(params: GenerationParams | None) -> dict[str, Any] | None:
    if params is None:
        return None
    out: dict[str, Any] = {
        name: getattr(params, name)
        for name in ("temperature", "top_p", "max_tokens", "seed")
        if getattr(params, name) is not None
    }
    if params.stop is not None:
        out["stop"] = list(params.stop)
    return out


def _positioned(run: FinishedRun) -> Iterator[tuple[str, AgentResult]]:
    result = run.result
    if result is None:
        for call in run.calls:
            yield ("aggregator" if call.role == "aggregator" else "layer"), call
        return
    for layer in result.layers:
        for call in layer.agents:
            yield "layer", call
    for call in result.extra_calls:
        yield "extra", call
    yield "aggregator", result.aggregator


def run_row(run: FinishedRun, content: ContentPolicy) -> dict[str, Any]:
    """The ``runs`` row of ``run``; with ``content="none"`` no message or answer text."""
    keep = content == "full"
    result = run.result
    calls = [call for _, call in _positioned(run)]
    usage = Usage.sum(call.usage for call in calls)
    costs = [call.cost for call in calls if call.cost is not None]
    layers = [] if result is None else result.layers
    return {
        "id": run.id,
        "created": run.started_at,
        "source": run.source,
        "mixture": run.spec.name,
        "mixture_hash": mixture_hash(run.spec),
        "mixture_yaml": mixture_yaml(run.spec, run.setup),
        "trace_id": run.trace_id,
        "question": _question(run.messages) if keep else "",
        "output": (result.output if result else None) if keep else None,
        "conversation": _json([m.to_dict() for m in run.messages] if keep else []),
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "calls": usage.calls,
        "cost": sum(costs) if costs else None,
        "latency_s": run.latency_s,
        "ttft_s": result.ttft_s if result else None,
        "failures": run.failures,
        "error": run.error,
        "cancelled": int(run.cancelled),
        "content": content,
        "replay_of": run.replay_of,
        "layers": _json(
            [{"index": x.index, "min_ok": x.min_ok, "notes": list(x.notes)} for x in layers]
        ),
        "notes": _json(list(result.notes) if result else []),
        "models": _json(sorted({call.model for call in calls})),
    }


def call_rows(run: FinishedRun, content: ContentPolicy) -> list[dict[str, Any]]:
    """The ``calls`` rows of ``run``, in rendering order (layers, extra calls, aggregator)."""
    keep = content == "full"
    rows = []
    for position, (kind, call) in enumerate(_positioned(run)):
        rows.append(
            {
                "run_id": run.id,
                "position": position,
                "kind": kind,
                "layer": call.layer,
                "idx": call.index,
                "agent": call.agent,
                "role": call.role,
                "model": call.model,
                "messages": _json([m.to_dict() for m in call.messages] if keep else []),
                "params": _json(_params(call.params)),
                "output": call.output if keep else None,
                "error": call.error,
                "error_type": call.error_type,
                "prompt_tokens": call.usage.prompt_tokens,
                "completion_tokens": call.usage.completion_tokens,
                "usage_calls": call.usage.calls,
                "latency_s": call.latency_s,
                "ttft_s": call.ttft_s,
                "attempts": call.attempts,
                "finish_reason": call.finish_reason,
                "cost": call.cost,
                "partial": int(call.partial),
                "notes": _json(list(call.notes)),
                "started_at": call.started_at,
            }
        )
    return rows


def _agent(row: Mapping[str, Any]) -> AgentResult:
    params = json.loads(row["params"] or "null")
    if params is not None and "stop" in params:
        params["stop"] = tuple(params["stop"])
    return AgentResult(
        agent=row["agent"],
        model=row["model"],
        layer=row["layer"],
        index=row["idx"],
        role=row["role"],
        output=row["output"] if row["error"] is None else None,
        error=row["error"],
        error_type=row["error_type"],
        usage=Usage(row["prompt_tokens"], row["completion_tokens"], row["usage_calls"]),
        latency_s=row["latency_s"],
        ttft_s=row["ttft_s"],
        attempts=row["attempts"],
        finish_reason=row["finish_reason"],
        cost=row["cost"],
        partial=bool(row["partial"]),
        notes=tuple(json.loads(row["notes"])),
        messages=tuple(Message(**m) for m in json.loads(row["messages"])),
        params=None if params is None else GenerationParams(**params),
        started_at=row["started_at"] or 0.0,
    )


@dataclass(frozen=True)
class StoredRun:
    """One run read back from the history."""

    row: Mapping[str, Any]
    call_rows: tuple[Mapping[str, Any], ...]

    @property
    def id(self) -> str:
        return str(self.row["id"])

    @property
    def messages(self) -> tuple[Message, ...]:
        return tuple(Message(**m) for m in json.loads(self.row["conversation"]))

    @property
    def failed(self) -> bool:
        return bool(self.row["failures"]) or bool(self.row["cancelled"])

    def calls(self) -> list[AgentResult]:
        return [_agent(row) for row in self.call_rows]

    def layers(self) -> list[LayerResult]:
        """The proposer layers, each with its calls in order."""
        meta = {m["index"]: m for m in json.loads(self.row["layers"])}
        by_layer: dict[int, list[AgentResult]] = {}
        for row in self.call_rows:
            if row["kind"] == "layer":
                by_layer.setdefault(row["layer"], []).append(_agent(row))
        return [
            LayerResult(
                index,
                tuple(agents),
                meta.get(index, {}).get("min_ok", 1),
                tuple(meta.get(index, {}).get("notes", ())),
            )
            for index, agents in sorted(by_layer.items())
        ]

    def result(self) -> Result | None:
        """The engine's result as it was (``None`` for a run that failed or was cancelled)."""
        if self.row["error"] is not None or self.row["cancelled"]:
            return None
        aggregators = [r for r in self.call_rows if r["kind"] == "aggregator"]
        if not aggregators:
            return None
        return Result(
            output=self.row["output"] or "",
            layers=tuple(self.layers()),
            aggregator=_agent(aggregators[-1]),
            mixture=self.row["mixture"],
            trace_id=self.row["trace_id"],
            latency_s=self.row["latency_s"],
            ttft_s=self.row["ttft_s"],
            extra_calls=tuple(_agent(r) for r in self.call_rows if r["kind"] == "extra"),
            notes=tuple(json.loads(self.row["notes"])),
            started_at=self.row["created"],
        )

    def summary(self) -> dict[str, Any]:
        """The run's list entry: everything but the conversation and the calls."""
        skip = {"conversation", "mixture_yaml", "layers", "notes", "models"}
        out = {k: v for k, v in self.row.items() if k not in skip}
        out["cancelled"] = bool(out["cancelled"])
        out["models"] = json.loads(self.row["models"])
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything stored of the run, as JSON-ready data (``moa logs show --json``, export)."""
        calls = []
        for row, call in zip(self.call_rows, self.calls(), strict=True):
            data = call.to_dict()
            data["kind"] = row["kind"]
            data["messages"] = [m.to_dict() for m in call.messages]
            data["params"] = json.loads(row["params"] or "null")
            data["started_at"] = call.started_at
            calls.append(data)
        return {
            **self.summary(),
            "mixture_yaml": self.row["mixture_yaml"],
            "conversation": [m.to_dict() for m in self.messages],
            "layers": json.loads(self.row["layers"]),
            "notes": json.loads(self.row["notes"]),
            "calls": calls,
        }
