"""Every chat completion is recorded; GET /v1/moa/runs serves the history behind the same keys."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from pydantic import SecretStr
from server_helpers import ANSWER, ServeFactory
from typer.testing import CliRunner

from moa import ProviderStatusError
from moa.cli.main import app
from moa.testing import FakeProvider

USER = [{"role": "user", "content": "How many legs has a spider?"}]
KEY = {"authorization": "Bearer sekret"}


def _runs(base: str, expected: int, **params: Any) -> list[dict[str, Any]]:
    """The runs listed, once the background writer has written ``expected`` of them."""
    deadline = time.monotonic() + 10
    while True:
        response = httpx.get(f"{base}/v1/moa/runs", params=params, headers=KEY)
        assert response.status_code == 200, response.text
        data: list[dict[str, Any]] = response.json()["data"]
        if len(data) >= expected or time.monotonic() > deadline:
            return data
        time.sleep(0.02)


def test_requests_are_recorded_and_served(serve: ServeFactory, fake: FakeProvider) -> None:
    fake.script("b", ProviderStatusError("upstream broke", status_code=400))
    base = serve(api_keys=(SecretStr("sekret"),))
    request = {"model": "fake-moa", "messages": USER}
    answered = httpx.post(f"{base}/v1/chat/completions", json=request, headers=KEY)
    assert answered.status_code == 200
    trace_id = answered.headers["x-moa-trace-id"]
    with httpx.stream(
        "POST", f"{base}/v1/chat/completions", json={**request, "stream": True}, headers=KEY
    ) as streamed:
        assert streamed.status_code == 200
        stream_trace = streamed.headers["x-moa-trace-id"]
        body = "".join(streamed.iter_text())
    assert "[DONE]" in body and stream_trace != trace_id

    runs = _runs(base, 2)
    assert [r["trace_id"] for r in runs] == [stream_trace, trace_id]
    assert all(r["source"] == "server" and r["mixture"] == "fake-moa" for r in runs)
    assert all(r["output"] == ANSWER and r["failures"] == 1 for r in runs)
    assert runs[0]["question"] == "How many legs has a spider?"

    one = httpx.get(f"{base}/v1/moa/runs/{runs[1]['id'][:12]}", headers=KEY).json()
    assert one["trace_id"] == trace_id
    assert [c["model"] for c in one["calls"]] == ["fake:a", "fake:b", "fake:c", "fake:agg"]
    assert one["calls"][1]["ok"] is False and "upstream broke" in one["calls"][1]["error"]
    assert one["conversation"] == USER

    assert _runs(base, 1, q="spider", failed="true")
    assert _runs(base, 0, mixture="other") == []
    assert httpx.get(f"{base}/v1/moa/runs/ffffffff", headers=KEY).status_code == 404
    # The same keys as every /v1 route.
    assert httpx.get(f"{base}/v1/moa/runs").status_code == 401
    assert httpx.get(f"{base}/v1/moa/runs/{runs[0]['id']}").status_code == 401

    # The same history moa logs reads: the server's run is found there too.
    found = CliRunner().invoke(app, ["logs", "-q", "spider", "--source", "server", "--json"])
    assert found.exit_code == 0
    assert {r["trace_id"] for r in json.loads(found.output)} == {trace_id, stream_trace}


def test_failed_request_is_recorded_with_its_error(serve: ServeFactory, fake: FakeProvider) -> None:
    fake.script("agg", ProviderStatusError("aggregator down", status_code=400))
    base = serve()
    response = httpx.post(
        f"{base}/v1/chat/completions", json={"model": "fake-moa", "messages": USER}
    )
    assert response.status_code >= 400
    [run] = _runs(base, 1)
    assert run["output"] is None and "AggregationError" in run["error"]
    assert run["failures"] == 2


def test_no_history(serve: ServeFactory) -> None:
    base = serve(history=False)
    request = {"model": "fake-moa", "messages": USER}
    assert httpx.post(f"{base}/v1/chat/completions", json=request).status_code == 200
    response = httpx.get(f"{base}/v1/moa/runs")
    assert response.status_code == 404 and "--no-history" in response.text


def test_content_none(serve: ServeFactory) -> None:
    base = serve(history_content="none")
    request = {"model": "fake-moa", "messages": USER}
    assert httpx.post(f"{base}/v1/chat/completions", json=request).status_code == 200
    [run] = _runs(base, 1)
    assert run["question"] == "" and run["output"] is None and run["content"] == "none"
    full = httpx.get(f"{base}/v1/moa/runs/{run['id']}").json()
    assert full["conversation"] == [] and all(c["output"] is None for c in full["calls"])
