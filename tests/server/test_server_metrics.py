"""``/metrics`` in Prometheus text format, ``/healthz``, and the playground's files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import MIXTURE, ServeFactory, fake_mixture

from moa import ProviderStatusError
from moa.server.metrics import MULTIPROC_DIR_ENV, forget_dead_workers, shared_metrics_dir
from moa.testing import FakeProvider

USER = [{"role": "user", "content": "What is 2 + 2?"}]


def samples(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(f"{base}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_count_requests_calls_tokens_and_errors(serve: ServeFactory) -> None:
    fake = FakeProvider(replies={"b": ProviderStatusError("down", status_code=500)})
    base = serve(mixtures={"fake-moa": fake_mixture(fake)})
    url = f"{base}/v1/chat/completions"
    assert httpx.post(url, json={"model": "fake-moa", "messages": USER}).status_code == 200
    streamed = {"model": "fake-moa", "messages": USER, "stream": True}
    assert httpx.post(url, json=streamed).status_code == 200
    assert httpx.post(url, json={"model": "nope", "messages": USER}).status_code == 404
    got = samples(base)

    def value(name: str, **labels: str) -> float:
        return got.get((name, frozenset(labels.items())), 0.0)

    route = "/v1/chat/completions"
    assert value("moa_http_requests_total", route=route, status="200") == 2
    assert value("moa_http_requests_total", route=route, status="404") == 1
    assert value("moa_http_request_duration_seconds_count", route=route) == 3
    assert value("moa_upstream_calls_total", model="fake:a", outcome="ok") == 2
    assert value("moa_upstream_calls_total", model="fake:b", outcome="ProviderStatusError") == 2
    assert value("moa_tokens_total", model="fake:agg", kind="completion") > 0
    assert value("moa_upstream_call_duration_seconds_count", model="fake:agg") == 2
    assert value("moa_time_to_first_token_seconds_count", mixture="fake-moa") == 2
    assert value("moa_completions_total", mixture="fake-moa", outcome="ok") == 2
    assert value("moa_errors_total", type="invalid_request_error", code="model_not_found") == 1
    assert value("moa_http_requests_in_flight") == 0


def test_metrics_count_retried_attempts(serve: ServeFactory) -> None:
    down = ProviderStatusError("down", status_code=503)
    fake = FakeProvider(replies={"b": [down, down, "fine"]})
    retrying = {**MIXTURE, "retry": {"max_attempts": 3, "backoff_initial": 0, "jitter": False}}
    base = serve(mixtures={"fake-moa": fake_mixture(fake, retrying)})
    response = httpx.post(
        f"{base}/v1/chat/completions", json={"model": "fake-moa", "messages": USER}
    )
    assert response.status_code == 200
    got = samples(base)
    assert got[("moa_upstream_retries_total", frozenset({("model", "fake:b")}))] == 2
    assert ("moa_upstream_retries_total", frozenset({("model", "fake:a")})) not in got
    assert got[("moa_upstream_calls_total", frozenset({("model", "fake:b"), ("outcome", "ok")}))]


def test_healthz_and_playground_files(serve: ServeFactory) -> None:
    base = serve()
    assert httpx.get(f"{base}/healthz").json()["status"] == "ok"
    page = httpx.get(f"{base}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for name in ("app.js", "runs.js", "style.css"):
        assert httpx.get(f"{base}/static/{name}").status_code == 200
    # Everything the page loads comes from this server: no CDN.
    assert "http" not in page.text.replace("http-equiv", "")
    assert httpx.get(f"{base}/static/../app.py").status_code == 404


def test_apps_in_one_process_keep_their_own_numbers(serve: ServeFactory) -> None:
    first, second = serve(), serve()
    body = {"model": "fake-moa", "messages": USER}
    assert httpx.post(f"{first}/v1/chat/completions", json=body).status_code == 200
    key = ("moa_completions_total", frozenset({"mixture": "fake-moa", "outcome": "ok"}.items()))
    assert samples(first)[key] == 1
    assert key not in samples(second)


def test_a_run_of_workers_gets_a_fresh_metrics_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MULTIPROC_DIR_ENV, "/somewhere/else")
    with shared_metrics_dir() as first:
        assert os.environ[MULTIPROC_DIR_ENV] == str(first)
        assert first.is_dir() and not list(first.iterdir())
        (first / "counter_1.db").write_bytes(b"")
    assert not first.exists()
    assert os.environ[MULTIPROC_DIR_ENV] == "/somewhere/else"
    with shared_metrics_dir() as second:
        assert second != first and not list(second.iterdir())


def test_a_scrape_forgets_the_in_flight_gauge_of_dead_workers(tmp_path: Path) -> None:
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    for pid in (exited.pid, os.getpid()):
        for name in (f"gauge_livesum_{pid}.db", f"counter_{pid}.db"):
            (tmp_path / name).write_bytes(b"")
    forget_dead_workers(tmp_path)
    left = sorted(path.name for path in tmp_path.iterdir())
    mine = os.getpid()
    assert left == sorted(
        [f"counter_{exited.pid}.db", f"counter_{mine}.db", f"gauge_livesum_{mine}.db"]
    )
