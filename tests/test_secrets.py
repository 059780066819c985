"""An upstream API key never leaves the process: not in output, logs, errors, metrics or files.

The upstream here echoes the key it was sent into its error messages, the worst
case a misbehaving proxy makes; every byte the CLI, the eval and the server write
is searched for it.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from moa.testing.openai_server import FakeOpenAIServer, ModelBehavior

CANARY = "sk-canary-7f3a9c1e5b"
KEY_ENV = "MOA_TEST_CANARY_KEY"
MOA = [sys.executable, "-c", "from moa.cli.main import main; main()"]
FIXTURES = Path(__file__).parent / "fixtures" / "eval"


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIServer]:
    failing = [(500, None)] * 1000
    models = {
        "a": ModelBehavior(text="The answer is 4.", require_key=CANARY),
        "leaky": ModelBehavior(failures=failing, echo_key=True, require_key=CANARY),
        "agg": ModelBehavior(text="#### 4", require_key=CANARY),
    }
    with FakeOpenAIServer(models) as server:
        yield server


@pytest.fixture
def config(tmp_path: Path, upstream: FakeOpenAIServer) -> Path:
    folder = tmp_path / "configs"
    folder.mkdir()
    path = folder / "mix.yaml"
    path.write_text(
        "name: mix\n"
        f'providers:\n  up: {{base_url: "{upstream.base_url}", api_key_env: {KEY_ENV}}}\n'
        'layers:\n  - [{model: "up:a"}, {model: "up:leaky"}]\n'
        'aggregator: {model: "up:agg"}\n'
        "retry: {max_attempts: 2, backoff_initial: 0.01}\n"
    )
    return path


def run(*args: str) -> str:
    # Wide enough that no panel wraps a line (and the key with it).
    env = {**os.environ, KEY_ENV: CANARY, "MOA_LOG": "debug", "COLUMNS": "400"}
    done = subprocess.run(
        [*MOA, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    return done.stdout + done.stderr


def written(folder: Path) -> Iterator[tuple[Path, bytes]]:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            yield path, path.read_bytes()


def test_the_cli_shows_the_failure_but_never_the_key(config: Path) -> None:
    out = run("run", "--config", str(config), "--json", "What is 2 + 2?")
    assert "HTTP 500" in out and "scripted failure" in out  # the failure is recorded...
    assert "***" in out
    assert CANARY not in out  # ...with the echoed key cut out, at debug level too
    out = run("run", "--config", str(config), "--show-layers", "What is 2 + 2?")
    assert "up:leaky FAILED" in out and "HTTP 500" in out and CANARY not in out


def test_eval_outputs_and_the_call_cache_never_hold_the_key(config: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "calls.sqlite"
    out = run(
        "eval",
        "gsm8k",
        "--data",
        str(FIXTURES / "gsm8k_mini.jsonl"),
        "--system",
        str(config),
        "--out",
        str(tmp_path / "out"),
        "--cache",
        str(cache),
        "--limit",
        "2",
    )
    assert CANARY not in out
    files = dict(written(tmp_path / "out")) | dict(written(cache.parent))
    assert any(b"scripted failure" in data for data in files.values())
    assert [path for path, data in files.items() if CANARY.encode() in data] == []
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600


async def test_the_server_never_answers_or_logs_the_key(
    config: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from moa.server import ServerSettings, create_app
    from server.server_helpers import running

    monkeypatch.setenv(KEY_ENV, CANARY)
    caplog.set_level(logging.DEBUG)
    app = create_app(ServerSettings(config_dir=config.parent, include_presets=False))
    question = [{"role": "user", "content": "What is 2 + 2?"}]
    bodies: list[str] = []
    with running(app) as base:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            for model in ("mix", "up:leaky"):
                for stream in (False, True):
                    response = await client.post(
                        "/v1/chat/completions",
                        json={"model": model, "messages": question, "stream": stream},
                    )
                    bodies.append(response.text)
            bodies.append((await client.get("/metrics")).text)
            bodies.append((await client.get("/v1/models")).text)
    assert any("scripted failure" in body for body in bodies)
    assert [body for body in bodies if CANARY in body] == []
    assert [r.getMessage() for r in caplog.records if CANARY in r.getMessage()] == []
