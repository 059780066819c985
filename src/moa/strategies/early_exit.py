"""Early exit: skip the remaining proposer layers once a layer's answers agree.

More refining layers rarely change answers that already agree, and each layer
adds its slowest call to the time before the first token. The test is the
``early_exit:`` block of the mixture (:class:`~moa.engine.spec.EarlyExitSpec`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from difflib import SequenceMatcher
from itertools import combinations

from moa.answers import extract_answer
from moa.engine.context import RunContext
from moa.engine.result import LayerResult
from moa.engine.spec import EarlyExitSpec

__all__ = ["agreement", "exit_early", "similarity"]


def similarity(a: str, b: str) -> float:
    """Word-level similarity of two texts, 0 to 1 (case and spacing ignored)."""
    words_a, words_b = a.lower().split(), b.lower().split()
    if not words_a and not words_b:
        return 1.0
    return SequenceMatcher(None, words_a, words_b, autojunk=False).ratio()


def agreement(texts: Sequence[str], spec: EarlyExitSpec) -> tuple[bool, str]:
    """Whether ``texts`` agree under ``spec``, and a short account of why."""
    threshold = spec.effective_threshold()
    if len(texts) < max(spec.min_answers, 1):
        return False, f"only {len(texts)} answer(s)"
    if spec.method == "answer":
        answers = [extract_answer(text) for text in texts]
        counts = Counter(answer for answer in answers if answer is not None)
        if not counts:
            return False, "no final answer found"
        top, count = counts.most_common(1)[0]
        detail = f"{count} of {len(texts)} answers are {top}"
        return count / len(texts) >= threshold, detail
    pairs = list(combinations(texts, 2))
    mean = sum(similarity(a, b) for a, b in pairs) / len(pairs) if pairs else 1.0
    return mean >= threshold, f"mean similarity {mean:.2f} (threshold {threshold:g})"


def exit_early(ctx: RunContext, layer: LayerResult, *, remaining: int) -> bool:
    """True (and a note in the result) when the remaining ``remaining`` layers can be skipped."""
    spec = ctx.spec.early_exit
    if spec is None or remaining <= 0:
        return False
    agreed, detail = agreement([a.output or "" for a in layer.answers], spec)
    if agreed:
        ctx.notes.append(
            f"early exit after layer {layer.index}: {detail}; skipped {remaining} proposer layer(s)"
        )
    return agreed
