"""Hand-written hostile requests: malformed JSON, wrong types, oversized parts, traversal.

Each gets an OpenAI-shaped 4xx (naming the field where there is one), never a 5xx
or a dropped connection, and the server answers normally afterwards.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from server_helpers import fake_mixture, running

from moa import ProviderRegistry
from moa.server import ServerSettings, create_app
from moa.testing import FakeProvider

USER = [{"role": "user", "content": "What is 2 + 2?"}]
GOOD = {"model": "fake-moa", "messages": USER}


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    fake = FakeProvider(replies={"a": "4", "b": "4", "c": "5", "agg": "It is 4."})
    registry = ProviderRegistry().add("fake", fake)
    app = create_app(
        ServerSettings(include_presets=False, max_body_bytes=64 * 1024, max_messages=20),
        mixtures={"fake-moa": fake_mixture(fake)},
        providers=registry,
    )
    with running(app) as url:
        yield url


@pytest.fixture
def client(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=30) as client:
        yield client
    with httpx.Client(base_url=base, timeout=30) as after:  # still serving
        assert after.post("/v1/chat/completions", json=GOOD).status_code == 200


def refused(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    error: dict[str, Any] = response.json()["error"]
    assert error["message"] and error["type"]
    if param is not None:
        assert error["param"] == param, error
    return error


def post_raw(client: httpx.Client, body: bytes, **headers: str) -> httpx.Response:
    headers = {"content-type": "application/json", **headers}
    return client.post("/v1/chat/completions", content=body, headers=headers)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b'{"model": "fake-moa", "messages": [}',
        b"[]",
        b"null",
        b'"a string"',
        b"42",
        b'{"model": "fake-moa"} trailing',
        b"\xff\xfe\x00garbage",  # not UTF-8, not a BOM-led UTF-16 document either
        b'{"model": "fake-moa", "messages": [{"role": "user", "content": "\xc3\x28"}]}',
        b"[" * 30_000 + b"]" * 30_000,  # nesting far past any parser's recursion limit
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    ],
)
def test_malformed_json_is_a_400(client: httpx.Client, body: bytes) -> None:
    refused(post_raw(client, body), 400)


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", float("nan")), ("temperature", float("inf")), ("top_p", float("-inf"))],
)
def test_non_finite_numbers_are_refused_naming_the_field(
    client: httpx.Client, field: str, value: float
) -> None:
    text = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[str(value)]
    body = b'{"model": "fake-moa", "messages": [{"role": "user", "content": "hi"}], "%s": %s}'
    refused(post_raw(client, body % (field.encode(), text.encode())), 400, field)


def test_utf16_and_utf32_bodies_are_read(client: httpx.Client) -> None:
    import json

    for encoding in ("utf-16", "utf-32"):
        response = post_raw(client, json.dumps(GOOD).encode(encoding))
        assert response.status_code in (200, 400), response.text
        if response.status_code == 400:
            refused(response, 400)


WRONG_TYPES: list[tuple[str, Any, str]] = [
    ("model", 12, "model"),
    ("model", "", "model"),
    ("model", None, "model"),
    ("messages", "hi", "messages"),
    ("messages", [], "messages"),
    ("messages", [42], "messages[0]"),
    ("messages", [{"role": "wizard", "content": "x"}], "messages[0].role"),
    ("messages", [{"role": "user", "content": 5}], "messages[0].content"),
    (
        "messages",
        [{"role": "user", "content": [{"type": "image_url"}]}],
        "messages[0].content[0].type",
    ),
    ("messages", [{"role": "user"}], "messages[0].content"),
    ("temperature", "hot", "temperature"),
    ("temperature", 3, "temperature"),
    ("top_p", [1], "top_p"),
    ("max_tokens", 0, "max_tokens"),
    ("max_tokens", "many", "max_tokens"),
    ("max_completion_tokens", -1, "max_completion_tokens"),
    ("stop", 7, "stop"),
    ("stop", ["a", "b", "c", "d", "e"], "stop"),
    ("seed", "x", "seed"),
    ("n", 3, "n"),
    ("stream", "yes please", "stream"),
    ("stream_options", {"include_usage": "x"}, "stream_options.include_usage"),
    ("stream_options", {"bogus": 1}, "stream_options.bogus"),
    ("logprobs", True, "logprobs"),
    ("top_logprobs", 99, "top_logprobs"),
    ("tools", [{"type": "function"}], "tools"),
    ("tool_choice", {"type": "function"}, "tool_choice"),
    ("frequency_penalty", 9, "frequency_penalty"),
    ("presence_penalty", "x", "presence_penalty"),
    ("logit_bias", [1, 2], "logit_bias"),
    ("moa", "fast", "moa"),
    ("moa", {"progress": "x"}, "moa.progress"),
    ("moa", {"unknown": 1}, "moa.unknown"),
    ("moa", {"quorum": -1}, "moa.quorum"),
    ("audio", {"voice": "x"}, "audio"),
]


@pytest.mark.parametrize(("field", "value", "param"), WRONG_TYPES)
def test_a_wrong_value_in_any_field_names_the_field(
    client: httpx.Client, field: str, value: Any, param: str
) -> None:
    response = client.post("/v1/chat/completions", json={**GOOD, field: value})
    assert response.status_code == 400, response.text[:300]
    error = refused(response, 400)
    assert error["param"] is not None and error["param"].startswith(param), error


def test_oversized_bodies_and_too_many_messages(client: httpx.Client) -> None:
    big = {**GOOD, "messages": [{"role": "user", "content": "x" * 100_000}]}
    refused(client.post("/v1/chat/completions", json=big), 413)
    many = {**GOOD, "messages": USER * 21}
    refused(client.post("/v1/chat/completions", json=many), 400, "messages")


def raw(base: str, request: bytes) -> bytes:
    """Send ``request`` on a socket of its own; the server's reply as it came."""
    host, port = urlsplit(base).hostname, urlsplit(base).port
    assert host is not None and port is not None
    reply = b""
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(request)
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith((b"}", b".")):
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:  # it answered and closed while we still sent
                break
            if not chunk:
                break
            reply += chunk
    return reply


def test_a_body_announced_past_the_limit_is_refused_before_it_is_read(base: str) -> None:
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n"
    reply = raw(base, head + b"Content-Type: application/json\r\n\r\n{}")
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b'"request_too_large"' in reply


@pytest.mark.parametrize("size", [20_000, 200_000])
def test_oversized_headers_get_an_answer_not_a_dropped_connection(base: str, size: int) -> None:
    big = b"X-Big: " + b"a" * size + b"\r\n"
    request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + big
    reply = raw(base, request + b"Content-Length: 2\r\n\r\n{}")
    # Past the HTTP parser's limit the answer comes from the HTTP layer, in plain text.
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]


@pytest.mark.parametrize(
    "path",
    [
        "/static/../app.py",
        "/static/..%2fapp.py",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/static/....//....//etc/passwd",
        "/static/app.js%00.png",
        "/static//etc/passwd",
        "/static/" + "a" * 5000,
    ],
)
def test_static_files_cannot_be_escaped(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404, response.text[:200]
    assert b"root:" not in response.content and b"import" not in response.content
