"""``moa serve`` as a user runs it: a real process, config files, a real OpenAI-style upstream."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from moa.cli.main import app
from moa.testing.openai_server import FakeOpenAIServer, ModelBehavior

USER: Any = [{"role": "user", "content": "What is 2 + 2?"}]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIServer]:
    models = {
        "a": ModelBehavior(text="Alpha says 4."),
        "b": ModelBehavior(text="Beta says 4."),
        "agg": ModelBehavior(text="It is 4.", tokens_per_second=200),
    }
    with FakeOpenAIServer(models) as server:
        yield server


def write_config(folder: Path, base_url: str) -> None:
    (folder / "duo.yaml").write_text(
        f"""
providers:
  up: {{base_url: "{base_url}", requires_key: false}}
layers:
  - [{{model: "up:a"}}, {{model: "up:b"}}]
aggregator: {{model: "up:agg"}}
""",
        "utf-8",
    )
    (folder / "solo.yml").write_text(
        f"""
name: one-model
providers:
  up: {{base_url: "{base_url}", requires_key: false}}
aggregator: {{model: "up:a"}}
""",
        "utf-8",
    )


def start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-c", "from moa.cli.main import main; main()", "serve"]
    process = subprocess.Popen(
        [*command, "--port", str(port), *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("moa serve did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_serve_a_config_directory(tmp_path: Path, upstream: FakeOpenAIServer) -> None:
    write_config(tmp_path, upstream.base_url)
    process, base = start(["--config-dir", str(tmp_path), "--no-presets"], {"MOA_API_KEYS": ""})
    try:
        api = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        assert sorted(m.id for m in api.models.list().data) == ["duo", "one-model"]
        completion = api.chat.completions.create(model="duo", messages=USER)
        assert completion.choices[0].message.content == "It is 4."
        assert completion.usage is not None and completion.model_extra is not None
        assert completion.model_extra["moa"]["usage"]["calls"] == 3
        stream = api.chat.completions.create(model="one-model", messages=USER, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
            "Alpha says 4."
        )
        upstream_models = sorted(str(body["model"]) for body in upstream.requests)
        assert upstream_models == ["a", "a", "agg", "b"]
    finally:
        stop(process)


def test_serve_with_workers_and_a_key(tmp_path: Path, upstream: FakeOpenAIServer) -> None:
    write_config(tmp_path, upstream.base_url)
    args = ["--config-dir", str(tmp_path), "--no-presets", "--workers", "2"]
    args += ["--api-key-env", "TEST_MOA_KEYS"]
    process, base = start(args, {"TEST_MOA_KEYS": "s3cret"})
    try:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).models.list()
        api = openai.OpenAI(base_url=f"{base}/v1", api_key="s3cret", max_retries=0)
        completion = api.chat.completions.create(model="duo", messages=USER)
        assert completion.choices[0].message.content == "It is 4."
    finally:
        stop(process)
    assert process.stderr is not None
    assert b"s3cret" not in process.stderr.read()  # keys are never logged


def chat_requests_counted(base: str) -> float:
    """What one scrape of ``/metrics`` says about successful chat completions."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "moa_http_requests_total"
        and sample.labels == {"route": "/v1/chat/completions", "status": "200"}
    )


def answered_by_each_worker(shared: Path, route: str) -> list[float]:
    """Requests to ``route`` that each worker answered, read from that worker's own file."""
    return [
        sum(
            sample.value
            for metric in MultiProcessCollector.merge([str(file)])  # type: ignore[no-untyped-call]
            for sample in metric.samples
            if sample.name == "moa_http_requests_total" and sample.labels["route"] == route
        )
        for file in sorted(shared.glob("counter_*.db"))
    ]


def test_metrics_of_every_worker_whichever_answers(
    tmp_path: Path, upstream: FakeOpenAIServer
) -> None:
    write_config(tmp_path, upstream.base_url)
    scratch = tmp_path / "tmp"  # where moa serve makes its metrics directory
    scratch.mkdir()
    args = ["--config-dir", str(tmp_path), "--no-presets", "--workers", "2", "--no-access-log"]
    process, base = start(args, {"MOA_API_KEYS": "", "TMPDIR": str(scratch)})
    try:
        [shared] = scratch.glob("moa-metrics-*")
        chat = "/v1/chat/completions"
        body = {"model": "one-model", "messages": USER}
        sent = 0
        # One connection per request, until each worker has answered some.
        while sent < 100:
            per_worker = answered_by_each_worker(shared, chat)
            if sent >= 4 and len(per_worker) == 2 and min(per_worker) > 0:
                break
            assert httpx.post(f"{base}{chat}", json=body, timeout=10).status_code == 200
            sent += 1
        else:
            raise AssertionError("one worker answered every request")
        deadline = time.monotonic() + 10
        while chat_requests_counted(base) != sent and time.monotonic() < deadline:
            time.sleep(0.05)
        # Every scrape counts every worker's requests, until each worker has answered scrapes.
        before = answered_by_each_worker(shared, "/metrics")
        for _ in range(100):
            assert chat_requests_counted(base) == sent
            after = answered_by_each_worker(shared, "/metrics")
            if all(now > then for now, then in zip(after, before, strict=True)):
                break
        else:
            raise AssertionError("one worker answered every scrape")
    finally:
        stop(process)
    assert not list(scratch.glob("moa-metrics-*"))  # removed when moa serve stops


def test_broken_config_fails_before_serving(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("aggregator: {model: 'up:a'}\nlayerz: []\n", "utf-8")
    result = CliRunner().invoke(app, ["serve", "--config-dir", str(tmp_path), "--no-presets"])
    assert result.exit_code == 2
    assert "layerz" in result.output


def test_startup_names_the_mixtures_that_cannot_run_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "staircase.yaml").write_text(
        """
providers:
  up: {base_url: "http://127.0.0.1:9/v1", requires_key: false}
layers:
  - [{model: "up:a"}, {model: "up:b"}]
aggregator: {model: "up:agg"}
strategy: {type: chunked}
""",
        "utf-8",
    )
    served: list[object] = []
    options_seen: list[dict[str, object]] = []

    def run(app: object, **options: object) -> None:
        served.append(app)
        options_seen.append(options)

    monkeypatch.setattr(uvicorn, "run", run)
    monkeypatch.setattr("moa.server.app.tune_gc_for_serving", lambda: None)  # not this process's
    args = ["serve", "--config-dir", str(tmp_path), "--no-presets"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "500"})
    assert result.exit_code == 0, result.output
    assert len(served) == 1  # it serves all the same: a request may choose another strategy
    assert "staircase cannot run here: strategy 'chunked' needs" in result.output
    assert "supports_continue: true" in result.output
    # Idle client connections outlive the clients' and balancers' own idle timeouts.
    assert options_seen[0]["timeout_keep_alive"] == 75
    result = CliRunner().invoke(app, [*args, "--keep-alive", "7"])
    assert result.exit_code == 0 and options_seen[1]["timeout_keep_alive"] == 7


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--config-dir", "--workers", "--api-key-env"):
        assert option in result.output
