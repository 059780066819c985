"""OpenTelemetry: one trace per run, a GenAI ``chat`` span per call under the run's span."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from moa import Mixture, MixtureSpec, ProviderRegistry, ProviderStatusError
from moa.history import HistorySettings, HistoryStore, RunLog
from moa.testing import FakeProvider
from moa.tracing import Tracing
from moa.types import Message

TWO_LAYERS = {
    "name": "two-layers",
    "defaults": {"temperature": 0.7, "max_tokens": 128},
    "layers": [
        [{"model": "fake:a"}, {"model": "fake:b"}, {"model": "fake:broken"}],
        [{"model": "fake:a"}, {"model": "fake:b"}],
    ],
    "aggregator": {"model": "fake:agg", "temperature": 0.1},
    "retry": {"max_attempts": 2, "backoff_initial": 0.001, "jitter": False},
}


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    yield memory
    memory.clear()


def tracing(exporter: InMemorySpanExporter, *, content: bool = False) -> Tracing:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider, capture_content=content)


def two_layer_mixture() -> Mixture:
    fake = FakeProvider(
        replies={
            "a": "Alpha: eight legs.",
            "b": "Beta: spiders have 8 legs.",
            "broken": ProviderStatusError("upstream broke", status_code=503),
            "agg": "A spider has eight legs.",
        }
    )
    return Mixture(MixtureSpec.model_validate(TWO_LAYERS), ProviderRegistry().add("fake", fake))


def run_traced(log: RunLog, question: str = "How many legs has a spider?") -> str:
    mixture = two_layer_mixture()
    messages = (Message("user", question),)
    capture = log.start(mixture.spec, messages, source="cli")
    for event in mixture.stream(messages, trace_id=capture.trace_id):
        capture.observe(event)
    log.submit(capture.finish())
    log.close()
    assert capture.result is not None
    assert capture.result.trace_id == capture.trace_id
    return capture.trace_id


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


def test_span_tree_of_a_two_layer_mixture_with_a_failing_proposer(
    exporter: InMemorySpanExporter,
) -> None:
    trace_id = run_traced(RunLog(None, tracing(exporter)))
    spans = exporter.get_finished_spans()
    [root] = [s for s in spans if s.parent is None]
    assert root.name == "invoke_agent two-layers"
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["gen_ai.agent.name"] == "two-layers"
    assert format(root.context.trace_id, "032x") == trace_id
    calls = [s for s in spans if s is not root]
    assert len(calls) == 6  # 3 proposers, 2 refiners, the aggregator
    for span in calls:
        assert span.parent is not None and span.parent.span_id == root.context.span_id
        assert span.context.trace_id == root.context.trace_id
        assert span.attributes["gen_ai.operation.name"] == "chat"
        assert span.attributes["gen_ai.provider.name"] == "fake"
        assert root.start_time <= span.start_time <= span.end_time <= root.end_time
    layout = sorted(
        (s.attributes["moa.layer"], s.attributes["moa.role"], s.attributes["moa.agent"])
        for s in calls
    )
    assert [(layer, role) for layer, role, _ in layout] == [
        (1, "proposer"),
        (1, "proposer"),
        (1, "proposer"),
        (2, "proposer"),
        (2, "proposer"),
        (3, "aggregator"),
    ]
    names = by_name(tuple(calls))
    [broken] = names["chat broken"]
    assert broken.status.status_code == StatusCode.ERROR
    assert broken.attributes["error.type"] == "ProviderStatusError"
    assert broken.attributes["moa.attempts"] == 2
    events = [e.name for e in broken.events]
    assert events == ["moa.retry", "exception"]
    assert "upstream broke" in str(broken.events[1].attributes["exception.message"])
    [aggregator] = names["chat agg"]
    attributes = aggregator.attributes
    assert attributes["gen_ai.request.model"] == "agg"
    assert attributes["gen_ai.request.temperature"] == 0.1
    assert attributes["gen_ai.request.max_tokens"] == 128
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert aggregator.status.status_code == StatusCode.UNSET
    for span in names["chat a"]:
        assert span.attributes["gen_ai.request.temperature"] == 0.7
    # No message content unless asked for.
    assert not any("gen_ai.input.messages" in s.attributes for s in spans)


def test_message_content_only_when_opted_in(exporter: InMemorySpanExporter) -> None:
    run_traced(RunLog(None, tracing(exporter, content=True)))
    spans = by_name(exporter.get_finished_spans())
    [aggregator] = spans["chat agg"]
    seen = json.loads(str(aggregator.attributes["gen_ai.input.messages"]))
    assert any("Alpha: eight legs." in m["content"] for m in seen)
    output = json.loads(str(aggregator.attributes["gen_ai.output.messages"]))
    assert output[0]["parts"][0]["content"] == "A spider has eight legs."


def test_history_and_trace_share_the_trace_id(exporter: InMemorySpanExporter, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = HistorySettings(tmp_path / "h.sqlite")
    trace_id = run_traced(RunLog(settings, tracing(exporter)))
    [run] = HistoryStore(settings.path).runs()
    assert run.row["trace_id"] == trace_id
    [root] = [s for s in exporter.get_finished_spans() if s.parent is None]
    assert root.attributes["moa.run_id"] == run.id


def test_off_without_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert Tracing.from_env() is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert Tracing.from_env() is None
