"""Prometheus metrics of the server, for one process or for several workers.

HTTP requests and their latency by route and status; first-token latency per
mixture; every upstream call by model and outcome, with its latency and tokens;
errors by type.

In one process (``moa serve``, tests, an application embedding the app) every
app keeps its own registry, so several apps in one process never mix their
numbers. With several worker processes (``moa serve --workers N``) the numbers
come from prometheus-client's multiprocess mode: :func:`shared_metrics_dir`
makes a fresh directory for the run and names it in ``PROMETHEUS_MULTIPROC_DIR``
before the workers start. prometheus-client decides when it is imported whether
values live in memory or in files, and each worker imports it afresh, so each
writes its values to files of its own there; a scrape, whichever worker answers
it, merges the files of every worker. The in-flight gauge counts live workers
only: a worker that stops drops its files for it, and a scrape drops those of a
worker that died without stopping.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from moa.engine.breaker import breaker_states
from moa.engine.result import AgentResult

__all__ = [
    "CONTENT_TYPE_LATEST",
    "MULTIPROC_DIR_ENV",
    "ServerMetrics",
    "forget_dead_workers",
    "multiprocess_dir",
    "shared_metrics_dir",
]

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's variable naming the directory of multiprocess mode."""

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def multiprocess_dir() -> Path | None:
    """The directory this process writes its metric values to, or None when they are in memory.

    Values are in files only when ``PROMETHEUS_MULTIPROC_DIR`` was set before
    prometheus-client was first imported in this process.
    """
    path = os.environ.get(MULTIPROC_DIR_ENV)
    if not path or not getattr(values.ValueClass, "_multiprocess", False):
        return None
    return Path(path)


@contextmanager
def shared_metrics_dir() -> Iterator[Path]:
    """A fresh directory in ``PROMETHEUS_MULTIPROC_DIR`` for the workers started inside.

    A directory per run, because files left by an earlier run would be counted
    again; it is removed, and the variable restored, on the way out.
    """
    previous = os.environ.get(MULTIPROC_DIR_ENV)
    path = Path(tempfile.mkdtemp(prefix="moa-metrics-"))
    os.environ[MULTIPROC_DIR_ENV] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_DIR_ENV, None)
        else:
            os.environ[MULTIPROC_DIR_ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


def forget_dead_workers(path: Path) -> None:
    """Drop the live-gauge files of processes that no longer exist (a crashed worker's)."""
    if os.name != "posix":  # os.kill(pid, 0) probes only on POSIX
        return
    for file in path.glob("gauge_live*_*.db"):
        try:
            pid = int(file.stem.rsplit("_", 1)[1])
            os.kill(pid, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
        except PermissionError:
            continue  # alive, under another user


class _CircuitCollector(Collector):
    """The providers' circuit breakers of this process, read at scrape time."""

    def collect(self) -> Iterator[Metric]:
        opened = GaugeMetricFamily(
            "moa_circuit_open",
            "1 while a provider's calls are skipped after failures in a row.",
            labels=["provider"],
        )
        skipped = CounterMetricFamily(
            "moa_circuit_skipped",
            "Calls not sent because their provider's circuit was open.",
            labels=["provider"],
        )
        by_name: dict[str, tuple[bool, int]] = {}
        for state in breaker_states():  # mixtures may each have a provider of that name
            was_open, count = by_name.get(state.provider, (False, 0))
            by_name[state.provider] = (was_open or state.open, count + state.skipped)
        for name, (is_open, count) in sorted(by_name.items()):
            opened.add_metric([name], 1.0 if is_open else 0.0)
            skipped.add_metric([name], count)
        yield opened
        yield skipped


class _LoopCollector(Collector):
    """Tasks alive on the event loop that answers the scrape (a leak shows as growth)."""

    def collect(self) -> Iterator[Metric]:
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # scraped from outside an event loop
            return
        yield GaugeMetricFamily(
            "moa_event_loop_tasks", "Tasks alive on this worker's event loop.", value=tasks
        )


class ServerMetrics:
    """The counters and histograms the server updates, and their text exposition."""

    def __init__(self) -> None:
        self.shared_dir = multiprocess_dir()
        # The metrics always register here, never in the library's global registry;
        # in multiprocess mode this registry is not what a scrape reads.
        self.registry = CollectorRegistry(auto_describe=True)
        self._scraped = self.registry
        if self.shared_dir is not None:
            self._scraped = CollectorRegistry()
            MultiProcessCollector(self._scraped, path=str(self.shared_dir))  # type: ignore[no-untyped-call]
        self._scraped.register(_CircuitCollector())
        self._scraped.register(_LoopCollector())
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
            "moa_http_requests_in_flight",
            "Chat completions being answered.",
            registry=r,
            multiprocess_mode="livesum",
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
        self.upstream_retries = Counter(
            "moa_upstream_retries",
            "Failed attempts of upstream calls that were tried again, by model.",
            ["model"],
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
        if result.attempts > 1:
            self.upstream_retries.labels(result.model).inc(result.attempts - 1)
        self.upstream_seconds.labels(result.model).observe(result.latency_s)
        if result.usage.prompt_tokens:
            self.tokens.labels(result.model, "prompt").inc(result.usage.prompt_tokens)
        if result.usage.completion_tokens:
            self.tokens.labels(result.model, "completion").inc(result.usage.completion_tokens)

    def observe_error(self, type_: str, code: str | None) -> None:
        self.errors.labels(type_, code or "").inc()

    def exposition(self) -> bytes:
        """The text format: this app's numbers, or every worker's in multiprocess mode."""
        if self.shared_dir is not None:
            forget_dead_workers(self.shared_dir)
        return generate_latest(self._scraped)

    def close(self) -> None:
        """This process stops serving: its in-flight requests stop counting."""
        if self.shared_dir is not None:
            mark_process_dead(os.getpid(), str(self.shared_dir))  # type: ignore[no-untyped-call]
