"""A conversation as prompt tokens in which what the messages say is plain text.

A chat template wraps each message in control tokens (``<|im_start|>user`` ...
``<|im_end|>``). Tokenizing the rendered prompt as one text with special tokens on
would turn the same strings *inside* a message into real control tokens too: a
user, or a proposer whose answer is quoted to the aggregator, could end its turn
and open a system turn of its own. So the template is rendered with a placeholder
for each message's content, the scaffolding between the placeholders is tokenized
with special tokens, and every content (and a partial answer being continued) as
plain text, where ``<|im_end|>`` is just ten characters.

A template that does something to a content other than print it (so the
placeholders do not come back once each, in order) is rendered with the real
contents instead, after :func:`neutralise` has broken every control-token text in
them; the same happens to the messages of the calls that must go through
llama-cpp-python's own chat completion (``response_format``, ``top_logprobs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from moa.types import Message

__all__ = ["neutralise", "plain_messages", "tokens_for"]

_MARK = "\ue000moa-content-{}\ue001"  # private-use characters no template prints by itself
_BREAK = "\u200b"  # zero-width space: splits a control token's text, shows as nothing


def tokens_for(
    llm: Any, formatter: Any, messages: Sequence[Message], *, partial: str | None
) -> tuple[Any, list[int]]:
    """The template's rendering (its stop strings and criteria) and the prompt tokens.

    ``partial``: the start of the assistant's answer, to be continued (plain text too).
    """
    marks = [_MARK.format(n) for n in range(len(messages))]
    marked = formatter(
        messages=[{**m.to_dict(), "content": mark} for m, mark in zip(messages, marks, strict=True)]
    )
    pieces = _split(marked.prompt, marks)
    if pieces is None:
        rendered = formatter(messages=plain_messages(llm, messages))
        whole = _tokenize(llm, rendered.prompt, bos=not rendered.added_special, special=True)
        return rendered, whole + _tokenize(llm, partial or "", bos=False, special=False)
    prompt: list[int] = []
    for n, scaffold in enumerate(pieces):
        prompt += _tokenize(llm, scaffold, bos=n == 0 and not marked.added_special, special=True)
        if n < len(messages):
            prompt += _tokenize(llm, messages[n].content, bos=False, special=False)
    return marked, prompt + _tokenize(llm, partial or "", bos=False, special=False)


def plain_messages(llm: Any, messages: Sequence[Message]) -> list[dict[str, str]]:
    """``messages`` as dicts, each content with its control-token texts broken."""
    return [{**m.to_dict(), "content": neutralise(llm, m.content)} for m in messages]


def neutralise(llm: Any, text: str) -> str:
    """``text`` with a zero-width space inside every string that is one of ``llm``'s
    control tokens, so that no tokenizer reads it as one."""
    if not text:
        return text
    data = text.encode("utf-8")
    special = llm.tokenize(data, add_bos=False, special=True)
    plain = llm.tokenize(data, add_bos=False, special=False)
    if special == plain:
        return text
    for token in dict.fromkeys(special):
        if token in plain:
            continue
        piece = bytes(llm.detokenize([token], special=True)).decode("utf-8", "replace")
        if len(piece) > 1 and piece in text:
            text = text.replace(piece, piece[0] + _BREAK + piece[1:])
    return text


def _split(prompt: str, marks: Sequence[str]) -> list[str] | None:
    """The text around each mark, or None unless every mark occurs once, in order."""
    pieces: list[str] = []
    rest = prompt
    for mark in marks:
        if prompt.count(mark) != 1 or mark not in rest:
            return None
        before, rest = rest.split(mark, 1)
        pieces.append(before)
    pieces.append(rest)
    return pieces


def _tokenize(llm: Any, text: str, *, bos: bool, special: bool) -> list[int]:
    if not text and not bos:
        return []
    return list(llm.tokenize(text.encode("utf-8"), add_bos=bos, special=special))
