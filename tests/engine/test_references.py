from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from moa.engine.references import Reference, default_instruction, with_references
from moa.types import Message

roles = st.sampled_from(["user", "assistant"])
texts = st.text(min_size=1, max_size=30)


def test_instruction_is_package_data_and_says_what_it_must() -> None:
    text = default_instruction().lower()
    assert "candidate answers" in text and "mistakes" in text and "do not simply pick" in text


def test_partial_references_are_marked() -> None:
    out = with_references([Message("user", "q")], [Reference("abc", partial=True)])
    assert "unfinished" in out[0].content


@given(
    system=st.one_of(st.none(), texts),
    turns=st.lists(st.tuples(roles, texts), min_size=1, max_size=6),
    refs=st.lists(texts, max_size=5),
)
def test_conversation_is_preserved(
    system: str | None, turns: list[tuple[str, str]], refs: list[str]
) -> None:
    messages = ([Message("system", system)] if system else []) + [
        Message(role, content)
        for role, content in turns  # type: ignore[arg-type]
    ]
    out = with_references(messages, [Reference(r) for r in refs], instruction="INSTR")
    # Every non-system message survives unchanged and in order.
    assert [m for m in out if m.role != "system"] == [m for m in messages if m.role != "system"]
    systems = [m for m in out if m.role == "system"]
    assert len(systems) == (1 if (system or refs) else 0)
    if systems:
        assert out[0].role == "system"
        if system:
            assert systems[0].content.startswith(system)
        for number, ref in enumerate(refs, start=1):
            assert f"Candidate answer {number} >>>\n{ref.strip()}\n" in systems[0].content
