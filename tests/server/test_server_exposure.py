"""``moa serve`` will not become an open proxy for the upstream keys it holds by accident."""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from moa.cli.main import app
from moa.cli.serve import is_loopback

runner = CliRunner()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("example.internal", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **options: calls.append(options))
    monkeypatch.delenv("MOA_API_KEYS", raising=False)
    return calls


def test_a_public_interface_without_client_keys_is_refused(
    started: list[dict[str, Any]],
) -> None:
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0", "--no-presets"])
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "--host 0.0.0.0" in message and "MOA_API_KEYS" in message
    assert "--allow-unauthenticated" in message
    assert started == []


def test_keys_loopback_or_an_explicit_flag_let_it_start(
    started: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert runner.invoke(app, ["serve", "--no-presets"]).exit_code == 0
    flag = ["serve", "--host", "0.0.0.0", "--no-presets", "--allow-unauthenticated"]
    assert runner.invoke(app, flag).exit_code == 0
    monkeypatch.setenv("MOA_API_KEYS", "client-key-1")
    assert runner.invoke(app, ["serve", "--host", "0.0.0.0", "--no-presets"]).exit_code == 0
    assert [call["host"] for call in started] == ["127.0.0.1", "0.0.0.0", "0.0.0.0"]
