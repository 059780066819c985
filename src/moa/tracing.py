"""OpenTelemetry traces of runs: one trace per run, one span per agent call.

Spans follow the OpenTelemetry GenAI semantic conventions. A run is an
``invoke_agent`` span (``gen_ai.agent.name`` = the mixture); each call under
it is a ``chat`` span carrying ``gen_ai.request.model``, the sampling
parameters, ``gen_ai.usage.input_tokens``/``output_tokens`` and
``gen_ai.response.finish_reasons``, plus ``moa.layer``, ``moa.agent`` and
``moa.role``; retries are ``moa.retry`` events and a failed call has an error
status, ``error.type`` and an ``exception`` event. In the server the request
span is the parent and an incoming ``traceparent`` header is honoured.

Only the run's root span is started while the run goes on (its trace id
becomes the run's ``trace_id``); the call spans are made afterwards, with the
calls' own start and end times, by the history's background thread.

Needs the ``otel`` extra. It is on when a tracer provider from the SDK is
installed globally, or when the standard ``OTEL_*`` variables ask for an
exporter (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_TRACES_EXPORTER``); message
contents go into spans only with
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from moa import __version__
from moa.engine.result import AgentResult
from moa.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

    from moa.history.capture import FinishedRun

__all__ = ["CAPTURE_CONTENT_ENV", "Tracing"]

log = logging.getLogger(__name__)

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_EXPORTER_ENVS = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class Tracing:
    """Makes the spans of runs with one tracer provider (see the module docstring)."""

    def __init__(self, provider: TracerProvider, *, capture_content: bool = False) -> None:
        from opentelemetry import trace

        self.provider = provider
        self.tracer = provider.get_tracer("moa", __version__)
        self.capture_content = capture_content
        self._trace = trace

    @classmethod
    def from_env(cls) -> Tracing | None:
        """Tracing as the environment asks for it, or ``None`` (then it costs nothing)."""
        wanted = any(os.environ.get(name) for name in _EXPORTER_ENVS)
        if _true("OTEL_SDK_DISABLED"):
            return None
        try:
            from opentelemetry import trace
            from opentelemetry.sdk.trace import TracerProvider
        except ImportError as exc:
            if wanted:
                raise ConfigError(
                    "OTEL_* variables ask for traces but OpenTelemetry is not installed: "
                    "pip install 'mixture-of-agents[otel]'"
                ) from exc
            return None
        capture = _true(CAPTURE_CONTENT_ENV)
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):  # the application set one up
            return cls(current, capture_content=capture)
        if not wanted:
            return None
        provider = _provider_from_env()
        if provider is None:
            return None
        trace.set_tracer_provider(provider)
        return cls(provider, capture_content=capture)

    def flush(self) -> None:
        self.provider.force_flush()

    # -- live spans ---------------------------------------------------------------------

    def start_request(self, name: str, headers: Mapping[str, str]) -> tuple[Span, Context]:
        """A server span for one request, child of the caller's ``traceparent`` if any."""
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind

        parent = propagate.extract(dict(headers))
        span = self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER)
        return span, self._trace.set_span_in_context(span, parent)

    def start_run(self, mixture: str, parent: object | None = None) -> tuple[Span, str]:
        """The run's root span (ended by :meth:`export`) and its trace id in hex."""
        span = self.tracer.start_span(
            f"invoke_agent {mixture}",
            context=parent,  # type: ignore[arg-type]
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": mixture},
        )
        return span, format(span.get_span_context().trace_id, "032x")

    @staticmethod
    def end_request(span: Span, *, status: int | None = None, error: str | None = None) -> None:
        from opentelemetry.trace import Status, StatusCode

        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if error is not None or (status is not None and status >= 500):
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()

    # -- spans made after the run -------------------------------------------------------

    def export(self, run: FinishedRun) -> None:
        """End the run's span and add a span per call, with their own times."""
        from opentelemetry.trace import Status, StatusCode

        root: Any = run.span
        if root is None:
            return
        context = self._trace.set_span_in_context(root)
        calls = list(run.result.calls() if run.result else run.calls)
        ends = [c.started_at + c.latency_s for c in calls if c.started_at]
        ended = max([run.ended_at, *ends])
        for call in calls:
            self._call_span(call, context, ended)
        root.set_attribute("moa.run_id", run.id)
        root.set_attribute("moa.calls", len(run.calls))
        result = run.result
        if result is not None:
            usage = result.usage
            root.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
            root.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
            if self.capture_content:
                root.set_attribute("gen_ai.output.messages", _output(result.output))
        if run.error is not None:
            root.set_attribute("error.type", run.error.partition(":")[0])
            root.set_status(Status(StatusCode.ERROR, run.error))
        elif run.cancelled:
            root.set_attribute("moa.cancelled", True)
        if self.capture_content:
            root.set_attribute(
                "gen_ai.input.messages", json.dumps([m.to_dict() for m in run.messages])
            )
        root.end(end_time=_ns(ended))

    def _call_span(self, call: AgentResult, context: Context, run_end: float) -> None:
        from opentelemetry.trace import Status, StatusCode

        start = call.started_at or run_end
        provider, _, model = call.model.partition(":")
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model or call.model,
            "gen_ai.usage.input_tokens": call.usage.prompt_tokens,
            "gen_ai.usage.output_tokens": call.usage.completion_tokens,
            "moa.layer": call.layer,
            "moa.agent": call.agent,
            "moa.role": call.role,
            "moa.attempts": call.attempts,
            "moa.partial": call.partial,
        }
        if call.finish_reason is not None:
            attributes["gen_ai.response.finish_reasons"] = [call.finish_reason]
        params = call.params
        if params is not None:
            for name, value in (
                ("temperature", params.temperature),
                ("max_tokens", params.max_tokens),
                ("top_p", params.top_p),
                ("seed", params.seed),
            ):
                if value is not None:
                    attributes[f"gen_ai.request.{name}"] = value
        if call.cost is not None:
            attributes["moa.cost_usd"] = call.cost
        if call.queued_s:
            attributes["moa.queued_s"] = round(call.queued_s, 4)
        if self.capture_content:
            attributes["gen_ai.input.messages"] = json.dumps([m.to_dict() for m in call.messages])
            if call.output is not None:
                attributes["gen_ai.output.messages"] = _output(call.output, call.finish_reason)
        span = self.tracer.start_span(
            f"chat {model or call.model}",
            context=context,
            attributes=attributes,
            start_time=_ns(start),
        )
        for attempt in range(2, call.attempts + 1):
            span.add_event("moa.retry", {"moa.attempt": attempt}, timestamp=_ns(start))
        end = _ns(start + call.latency_s)
        if call.notes:
            span.set_attribute("moa.notes", list(call.notes))
        if not call.ok:
            kind = call.error_type or "error"
            span.set_attribute("error.type", kind)
            span.add_event(
                "exception",
                {"exception.type": kind, "exception.message": call.error or ""},
                timestamp=end,
            )
            span.set_status(Status(StatusCode.ERROR, call.error))
        span.end(end_time=end)


def _output(text: str, finish_reason: str | None = None) -> str:
    message = {"role": "assistant", "parts": [{"type": "text", "content": text}]}
    return json.dumps([{**message, "finish_reason": finish_reason or "stop"}])


def _provider_from_env() -> TracerProvider | None:
    """An SDK provider exporting where ``OTEL_TRACES_EXPORTER`` and ``OTEL_EXPORTER_*`` say."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "none" or not name:
            continue
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            exporters.append(_otlp_exporter())
        else:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER: moa knows otlp, console and none, not {name!r}"
            )
    if not exporters:
        return None
    named = "OTEL_SERVICE_NAME" in os.environ or "service.name" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    provider = TracerProvider(resource=Resource.create({} if named else {"service.name": "moa"}))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _otlp_exporter() -> Any:
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    module = f"opentelemetry.exporter.otlp.proto.{'grpc' if protocol == 'grpc' else 'http'}"
    try:
        exporter = importlib.import_module(f"{module}.trace_exporter").OTLPSpanExporter
    except ImportError as exc:
        package = "grpc" if protocol == "grpc" else "http"
        raise ConfigError(
            f"the OTLP exporter is not installed: pip install "
            f"'mixture-of-agents[otel]' (or opentelemetry-exporter-otlp-proto-{package})"
        ) from exc
    return exporter()
