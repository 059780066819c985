"""``/metrics`` in Prometheus text format, ``/healthz``, and the playground's files."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import ServeFactory, fake_mixture

from moa import ProviderStatusError
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


def test_healthz_and_playground_files(serve: ServeFactory) -> None:
    base = serve()
    assert httpx.get(f"{base}/healthz").json()["status"] == "ok"
    page = httpx.get(f"{base}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for name in ("app.js", "style.css"):
        assert httpx.get(f"{base}/static/{name}").status_code == 200
    # Everything the page loads comes from this server: no CDN.
    assert "http" not in page.text.replace("http-equiv", "")
    assert httpx.get(f"{base}/static/../app.py").status_code == 404
