"""Popular OpenAI clients talk to the server unchanged: LangChain's ChatOpenAI and LiteLLM,
streaming and not."""

from __future__ import annotations

import os

import pytest
from server_helpers import ANSWER, ServeFactory

# LiteLLM reads its model price list from the network at import unless told to use its own.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

QUESTION = "What is 2 + 2?"


def test_langchain_chat_openai(serve: ServeFactory) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    chat = langchain_openai.ChatOpenAI(
        model="fake-moa", base_url=serve() + "/v1", api_key="unused", max_retries=0
    )
    message = chat.invoke(QUESTION)
    assert message.content == ANSWER
    assert message.usage_metadata is not None and message.usage_metadata["total_tokens"] > 0
    pieces = [chunk.content for chunk in chat.stream(QUESTION)]
    assert "".join(pieces) == ANSWER and len([p for p in pieces if p]) > 1


async def test_langchain_async_and_keys(serve: ServeFactory) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    openai = pytest.importorskip("openai")
    base = serve(api_keys=("client-key",)) + "/v1"
    chat = langchain_openai.ChatOpenAI(
        model="fake-moa", base_url=base, api_key="client-key", max_retries=0
    )
    assert (await chat.ainvoke(QUESTION)).content == ANSWER
    wrong = langchain_openai.ChatOpenAI(
        model="fake-moa", base_url=base, api_key="wrong", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        await wrong.ainvoke(QUESTION)


def test_litellm(serve: ServeFactory) -> None:
    litellm = pytest.importorskip("litellm")
    base = serve() + "/v1"
    options = {"model": "openai/fake-moa", "api_base": base, "api_key": "unused"}
    messages = [{"role": "user", "content": QUESTION}]
    response = litellm.completion(messages=messages, **options)
    assert response.choices[0].message.content == ANSWER
    assert response.usage.total_tokens > 0
    stream = litellm.completion(messages=messages, stream=True, **options)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == ANSWER
    with pytest.raises(litellm.NotFoundError):
        litellm.completion(messages=messages, **{**options, "model": "openai/no-such-mixture"})
