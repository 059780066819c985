"""Every answer of the server validates against OpenAI's published schema.

The schema (a subset of OpenAI's OpenAPI document: chat completions, models,
errors) is read from the shared evaluation data beside the project; without it the
test is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import ServeFactory

jsonschema = pytest.importorskip("jsonschema")

SCHEMAS = Path(__file__).resolve().parents[3] / "shared" / "data" / "openai" / "chat_schemas.json"
USER = [{"role": "user", "content": "What is 2 + 2?"}]


@pytest.fixture(scope="module")
def validate() -> Any:
    if not SCHEMAS.is_file():
        pytest.skip(f"OpenAI's schema is not at {SCHEMAS}")
    document = with_nulls(json.loads(SCHEMAS.read_text("utf-8")))

    def check(instance: Any, name: str) -> None:
        schema = {**document, "$ref": f"#/components/schemas/{name}"}
        errors = [
            f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in jsonschema.Draft202012Validator(schema).iter_errors(instance)
        ]
        assert errors == [], f"{name}: {errors}"

    return check


def with_nulls(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` (which parts of the document use) in JSON Schema's terms."""
    if isinstance(node, list):
        return [with_nulls(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: with_nulls(value) for key, value in node.items()}
    if node.pop("nullable", False):
        if isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
        if isinstance(node.get("enum"), list):
            node["enum"] = [*node["enum"], None]
    return node


def events(response: httpx.Response) -> list[Any]:
    lines = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    return [json.loads(line) for line in lines if line != "[DONE]"]


def test_completions_chunks_models_and_errors_match_the_schema(
    serve: ServeFactory, validate: Any
) -> None:
    base = serve()
    with httpx.Client(base_url=base, timeout=30) as client:
        answer = client.post("/v1/chat/completions", json={"model": "fake-moa", "messages": USER})
        validate(answer.json(), "CreateChatCompletionResponse")
        progress = {"moa": {"progress": True, "agent_deltas": True}}
        for options in ({}, {"stream_options": {"include_usage": True}}, progress):
            stream = client.post(
                "/v1/chat/completions",
                json={"model": "fake-moa", "messages": USER, "stream": True, **options},
            )
            chunks = events(stream)
            assert len(chunks) >= 3
            for chunk in chunks:
                validate(chunk, "CreateChatCompletionStreamResponse")
        validate(client.get("/v1/models").json(), "ListModelsResponse")
        validate(client.get("/v1/models/fake-moa").json(), "Model")
        refusals = [
            client.post("/v1/chat/completions", content=b"{not json"),
            client.post("/v1/chat/completions", json={"model": "fake-moa"}),
            client.post("/v1/chat/completions", json={"model": "nope", "messages": USER}),
            client.post(
                "/v1/chat/completions",
                json={"model": "fake-moa", "messages": USER, "temperature": "hot"},
            ),
            client.get("/v1/models/nope"),
        ]
        for refusal in refusals:
            assert 400 <= refusal.status_code < 500, refusal.text
            validate(refusal.json(), "ErrorResponse")
