"""Translating a Chat Completions request into the engine's messages and parameters."""

from __future__ import annotations

import json
from typing import Any

import pytest

from moa import Message
from moa.server.errors import APIError
from moa.server.schemas import parse_chat_request


def parse(**body: Any) -> Any:
    request = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
    return parse_chat_request(json.dumps(request).encode(), max_messages=100)


def test_every_role_becomes_an_engine_message() -> None:
    request = parse(
        messages=[
            {"role": "system", "content": "sys"},
            {"role": "developer", "content": [{"type": "text", "text": "dev"}]},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                "name": "ann",
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
            {"role": "function", "name": "g", "content": "7"},
            {"role": "assistant", "content": "ok", "refusal": None, "annotations": []},
        ]
    )
    assert request.messages == (
        Message("system", "sys"),
        Message("system", "dev"),
        Message("user", "a\nb", "ann"),
        Message("assistant", "[called f({})]"),
        Message("user", "[tool result c1]\n42"),
        Message("user", "[function result g]\n7"),
        Message("assistant", "ok"),
    )


def test_sampling_fields_and_stop() -> None:
    request = parse(temperature=0.1, top_p=0.5, max_tokens=10, stop="END", seed=3)
    params = request.params
    assert (params.temperature, params.top_p, params.max_tokens, params.stop, params.seed) == (
        0.1,
        0.5,
        10,
        ("END",),
        3,
    )
    assert parse(max_tokens=10, max_completion_tokens=5).params.max_tokens == 5
    assert parse(stop=["a", "b"]).params.stop == ("a", "b")


def test_vendor_fields_pass_through_and_account_fields_do_not() -> None:
    request = parse(
        presence_penalty=0.3,
        response_format={"type": "json_object"},
        top_k=40,
        user="u",
        store=True,
        metadata={"a": "b"},
        service_tier="auto",
    )
    assert request.params.extra == {
        "presence_penalty": 0.3,
        "response_format": {"type": "json_object"},
        "top_k": 40,
    }
    assert parse(response_format={"type": "text"}).params.extra == {}


def test_stream_options_and_moa_options() -> None:
    request = parse(stream=True, stream_options={"include_usage": True})
    assert request.stream and request.include_usage and not request.progress
    request = parse(stream=True, moa={"agent_deltas": True})
    assert request.progress and request.agent_deltas
    assert parse(n=1, tool_choice="none").stream is False


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "assistant", "content": None}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": []}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0]"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": 5}, "stop"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"model": ""}, "model"),
    ],
)
def test_invalid_fields_name_their_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as caught:
        parse(**body)
    assert caught.value.status == 400
    assert caught.value.param == param


def test_message_count_limit_and_body_shape() -> None:
    many = {"model": "m", "messages": [{"role": "user", "content": "x"}] * 5}
    with pytest.raises(APIError, match="too many messages"):
        parse_chat_request(json.dumps(many).encode(), max_messages=4)
    with pytest.raises(APIError, match="JSON object"):
        parse_chat_request(b"[1, 2]", max_messages=4)
    with pytest.raises(APIError, match="not valid JSON"):
        parse_chat_request(b"\xff", max_messages=4)
