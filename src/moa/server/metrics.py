"""Prometheus metrics of one server instance (a registry per app: no global state).

HTTP requests and their latency by route and status; first-token latency per
mixture; every upstream call by model and outcome, with its latency and tokens;
errors by type. With several workers each process keeps its own numbers.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from moa.engine.result import AgentResult

__all__ = ["CONTENT_TYPE_LATEST", "ServerMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ServerMetrics:
    """The counters and histograms the server updates, and their text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "moa_http_requests", "HTTP requests answered.", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "moa_http_request_duration_seconds",
            "Time from request to the last byte of the response.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "moa_http_requests_in_flight", "Chat completions being answered.", registry=r
        )
        self.completions = Counter(
            "moa_completions",
            "Chat completions by mixture and outcome.",
            ["mixture", "outcome"],
            registry=r,
        )
        self.ttft_seconds = Histogram(
            "moa_time_to_first_token_seconds",
            "Time from request to the first token of the final answer.",
            ["mixture"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_calls = Counter(
            "moa_upstream_calls",
            "Calls to models, by model and outcome.",
            ["model", "outcome"],
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "moa_upstream_call_duration_seconds",
            "Duration of one upstream call, retries included.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "moa_tokens", "Tokens of upstream calls.", ["model", "kind"], registry=r
        )
        self.errors = Counter(
            "moa_errors",
            "Error responses by OpenAI error type and code.",
            ["type", "code"],
            registry=r,
        )

    def observe_call(self, result: AgentResult) -> None:
        outcome = "ok" if result.ok else (result.error_type or "error")
        self.upstream_calls.labels(result.model, outcome).inc()
        self.upstream_seconds.labels(result.model).observe(result.latency_s)
        if result.usage.prompt_tokens:
            self.tokens.labels(result.model, "prompt").inc(result.usage.prompt_tokens)
        if result.usage.completion_tokens:
            self.tokens.labels(result.model, "completion").inc(result.usage.completion_tokens)

    def observe_error(self, type_: str, code: str | None) -> None:
        self.errors.labels(type_, code or "").inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
