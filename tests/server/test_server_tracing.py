"""The server's request span is the parent of the run's trace; traceparent is honoured."""

from __future__ import annotations

import time

import httpx
import pytest
from server_helpers import fake_mixture, running

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from moa import ProviderRegistry, ProviderStatusError
from moa.server import ServerSettings, create_app
from moa.testing import FakeProvider
from moa.tracing import Tracing

USER = [{"role": "user", "content": "What is 2 + 2?"}]
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.mark.parametrize("stream", [False, True])
def test_request_span_parents_the_run_and_keeps_the_callers_trace(
    fake: FakeProvider, stream: bool
) -> None:
    fake.script("b", ProviderStatusError("upstream broke", status_code=400))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(
        ServerSettings(include_presets=False, history=False),
        mixtures={"fake-moa": fake_mixture(fake)},
        providers=ProviderRegistry().add("fake", fake),
        tracing=Tracing(provider),
    )
    headers = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
    body = {"model": "fake-moa", "messages": USER, "stream": stream}
    with running(app) as base:
        response = httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 200
        assert response.headers["x-moa-trace-id"] == CALLER_TRACE
        deadline = time.monotonic() + 10
        while len(exporter.get_finished_spans()) < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
    spans = exporter.get_finished_spans()
    assert {format(s.context.trace_id, "032x") for s in spans} == {CALLER_TRACE}
    [request] = [s for s in spans if s.kind == SpanKind.SERVER]
    assert request.name == "POST /v1/chat/completions"
    assert request.parent is not None and format(request.parent.span_id, "016x") == CALLER_SPAN
    assert request.attributes["http.response.status_code"] == 200
    [run] = [s for s in spans if s.name == "invoke_agent fake-moa"]
    assert run.parent is not None and run.parent.span_id == request.context.span_id
    calls = [s for s in spans if s.name.startswith("chat ")]
    assert sorted(s.name for s in calls) == ["chat a", "chat agg", "chat b", "chat c"]
    assert all(s.parent is not None and s.parent.span_id == run.context.span_id for s in calls)
    [failed] = [s for s in calls if s.name == "chat b"]
    assert failed.attributes["error.type"] == "ProviderStatusError"
    assert request.start_time <= run.start_time


def test_without_traceparent_the_trace_id_is_the_request_spans(fake: FakeProvider) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(
        ServerSettings(include_presets=False, history=False),
        mixtures={"fake-moa": fake_mixture(fake)},
        providers=ProviderRegistry().add("fake", fake),
        tracing=Tracing(provider),
    )
    with running(app) as base:
        response = httpx.post(
            f"{base}/v1/chat/completions", json={"model": "fake-moa", "messages": USER}
        )
        deadline = time.monotonic() + 10
        while len(exporter.get_finished_spans()) < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
    [request] = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert request.parent is None
    assert response.headers["x-moa-trace-id"] == format(request.context.trace_id, "032x")
