"""What a judge's validation found: the criteria, ``judge-validation.json`` and its report.

The input is one record per comparison the judge made (see
:mod:`moa.eval.judge_check`): which comparison (``weak``, ``moa``, ``moa_lite``),
the winner in each order (``output``, ``reference`` or ``None``), and the
preference ``Judge.pairwise`` drew from them. Everything here is arithmetic
on those records, so it is tested without any model.

- **The weak answer loses**: in each order separately, the share of
  instructions on which the judge preferred the reference (gpt4_1106_preview)
  over the weak model's answer must reach 90%. An unparsed verdict or a failed
  call counts against the judge: it did not show it can tell.
- **Position consistency**: the share of pairs whose two orders named the same
  winner, over every comparison (informational; a judge that always answers
  ``[[A]]`` scores 0%).
- **Known order**: Together-MoA and Together-MoA-Lite against gpt4_1106_preview
  (ties between the two orders count half); AlpacaEval 2.0 ranks them
  MoA > MoA-Lite > gpt4_1106_preview, so a judge worth trusting must too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from moa.eval.stats import Estimate, wilson_interval

__all__ = [
    "BASELINE",
    "COMPARISONS",
    "THRESHOLD",
    "Assessment",
    "EarlyStop",
    "assess",
    "early_stop",
    "proportion",
    "render_validation",
]

BASELINE = "gpt4_1106_preview"
"""The reference output every comparison is made against (AlpacaEval 2.0's baseline)."""
COMPARISONS = {"weak": "", "moa": "Together-MoA", "moa_lite": "Together-MoA-Lite"}
"""Comparison name → the reference outputs compared with the baseline (``weak``: the weak model)."""
THRESHOLD = 90.0
"""Percent of instructions, in each order, on which the weak answer must lose."""
FORMAT = "moa-judge-validation/1"


def proportion(successes: float, n: int) -> Estimate:
    """``successes`` of ``n`` in percent, with its Wilson 95% interval."""
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    low, high = wilson_interval(successes, n)
    return Estimate(successes / n, low, high, n).scaled(100.0)


def _plain(estimate: Estimate) -> dict[str, Any]:
    """``estimate`` as JSON (``null`` where there was nothing to estimate)."""
    return {
        k: None if isinstance(v, float) and math.isnan(v) else v
        for k, v in estimate.to_dict().items()
    }


@dataclass(frozen=True)
class Assessment:
    """The three checks over a validation's comparison records."""

    weak_first: Estimate
    """% of instructions where the reference won with the weak answer shown first (as A)."""
    reference_first: Estimate
    """% of instructions where the reference won with it shown first (as A)."""
    consistency: Estimate
    """% of all pairs whose two orders named the same winner."""
    consistency_by: dict[str, Estimate]
    moa: Estimate
    """Together-MoA's win rate (%) against the baseline; ties count half."""
    moa_lite: Estimate
    failed: dict[str, int] = field(default_factory=dict)
    """Per comparison, pairs lost to an error (a failed answer or judge call)."""
    unjudged: dict[str, int] = field(default_factory=dict)
    """Per comparison, pairs with no verdict in either order (left out of the win rates)."""

    @property
    def weak_loses(self) -> bool:
        return all(
            not math.isnan(e.mean) and e.mean >= THRESHOLD
            for e in (self.weak_first, self.reference_first)
        )

    @property
    def known_order(self) -> bool:
        moa, lite = self.moa.mean, self.moa_lite.mean
        return not math.isnan(moa) and not math.isnan(lite) and moa > lite > 50.0

    @property
    def separated(self) -> bool:
        """Whether the two systems' intervals do not overlap (MoA's above MoA-Lite's)."""
        return self.moa.low > self.moa_lite.high

    @property
    def validated(self) -> bool:
        return self.weak_loses and self.known_order

    def criteria(self) -> dict[str, Any]:
        """The ``criteria`` block of ``judge-validation.json``."""
        return {
            "weak_loses": {
                "passed": self.weak_loses,
                "threshold": THRESHOLD,
                "weak_first": _plain(self.weak_first),
                "reference_first": _plain(self.reference_first),
                "failed": self.failed.get("weak", 0),
            },
            "known_order": {
                "passed": self.known_order,
                COMPARISONS["moa"]: _plain(self.moa),
                COMPARISONS["moa_lite"]: _plain(self.moa_lite),
                "cis_separate": self.separated,
                "failed": {k: self.failed.get(k, 0) for k in ("moa", "moa_lite")},
                "unjudged": {k: self.unjudged.get(k, 0) for k in ("moa", "moa_lite")},
            },
            "position_consistency": {
                "informational": True,
                "rate": _plain(self.consistency),
                "by_comparison": {k: _plain(v) for k, v in self.consistency_by.items()},
            },
        }


def assess(records: Sequence[Mapping[str, Any]]) -> Assessment:
    """The checks over every comparison record (see the module's docstring)."""
    by: dict[str, list[Mapping[str, Any]]] = {name: [] for name in COMPARISONS}
    for record in records:
        by.setdefault(str(record["comparison"]), []).append(record)
    failed = {name: sum(1 for r in rs if r.get("error")) for name, rs in by.items()}
    judged = {name: [r for r in rs if not r.get("error")] for name, rs in by.items()}
    weak = by["weak"]  # every instruction counts; a failure is not a win for the reference
    weak_first, reference_first = (
        proportion(sum(1 for r in weak if _verdict(r, order) == "reference"), len(weak))
        for order in (0, 1)
    )
    consistency_by = {
        name: proportion(sum(_consistent(r) for r in rs), len(rs))
        for name, rs in judged.items()
        if rs
    }
    every = [r for rs in judged.values() for r in rs]
    consistency = proportion(sum(_consistent(r) for r in every), len(every))
    rates, unjudged = {}, {}
    for name in ("moa", "moa_lite"):
        prefs = [float(r["preference"]) for r in judged[name] if r.get("preference") is not None]
        rates[name] = proportion(sum(prefs), len(prefs))
        unjudged[name] = len(judged[name]) - len(prefs)
    return Assessment(
        weak_first,
        reference_first,
        consistency,
        consistency_by,
        rates["moa"],
        rates["moa_lite"],
        {k: v for k, v in failed.items() if v},
        {k: v for k, v in unjudged.items() if v},
    )


@dataclass(frozen=True)
class EarlyStop:
    """Why a validation stopped before judging every pair: the weak-answer check had failed.

    With ``items`` instructions planned, the reference must win in at least
    :data:`THRESHOLD` percent of them in each order, so at most ``allowed`` may
    miss. Once one order has more misses than that, no remaining comparison
    can change the verdict.
    """

    judged: int
    """Weak-answer pairs judged when the verdict was sealed."""
    order: int
    """The order that failed: 0 with the weak answer shown first, 1 with the reference first."""
    misses: int
    allowed: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def early_stop(records: Sequence[Mapping[str, Any]], items: int) -> EarlyStop | None:
    """Where, in ``records``' order, the weak-answer check became unable to pass over ``items``.

    ``judged`` is the number of weak pairs up to and including the one that
    sealed it; None while the check can still pass. A miss is a pair where the
    reference did not win in that order: the other answer won, the verdict
    was unparsed or the call failed, as :func:`assess` counts it.
    """
    allowed = items - math.ceil(THRESHOLD * items / 100.0 - 1e-9)
    misses = [0, 0]
    weak = [r for r in records if r["comparison"] == "weak"]
    for judged, record in enumerate(weak, 1):
        for order in (0, 1):
            misses[order] += _verdict(record, order) != "reference"
            if misses[order] > allowed:
                return EarlyStop(judged, order, misses[order], allowed)
    return None


def _verdict(record: Mapping[str, Any], order: int) -> str | None:
    verdicts = record.get("verdicts") or []
    return verdicts[order] if len(verdicts) > order else None


def _consistent(record: Mapping[str, Any]) -> bool:
    first, second = _verdict(record, 0), _verdict(record, 1)
    return first is not None and first == second


# -- the report -------------------------------------------------------------------------------


def _ci(estimate: Mapping[str, Any]) -> str:
    mean = estimate.get("mean")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.1f}% [{estimate['low']:.1f}, {estimate['high']:.1f}] (n={estimate['n']})"


def _mark(passed: bool) -> str:
    return "pass" if passed else "**FAIL**"


def render_validation(document: Mapping[str, Any]) -> str:
    """``report.md`` of a validation, from its ``judge-validation.json`` document."""
    judge, weak = document["judge"], document["weak"]
    criteria = document["criteria"]
    loses, order = criteria["weak_loses"], criteria["known_order"]
    consistency = criteria["position_consistency"]
    moa, lite = COMPARISONS["moa"], COMPARISONS["moa_lite"]
    verdict = "VALIDATED" if document["validated"] else "NOT VALIDATED"
    stopped = document.get("stopped_early")
    graded = judge.get("protocol") == "graded"
    lines = [
        f"# Judge validation: `{judge['spec']}`",
        "",
        f"**{verdict}** (judge key `{judge['key']}`): the judge "
        + ("passed" if document["validated"] else "did not pass")
        + " both criteria below over the first "
        f"{document['items']} AlpacaEval instructions"
        + (_stopped(stopped, document["items"], graded) if stopped else "."),
        "",
        f"- Data: `{document['data']}`; weak model: `{weak['spec']}` (greedy, max_tokens "
        f"{weak['max_tokens']}); baseline: {BASELINE}.",
        f"- Command: `{document['command']}`",
        "",
        "| criterion | result | figures (95% Wilson CI) |",
        "|---|---|---|",
        f"| the weak answer loses (≥ {loses['threshold']:.0f}% in each order) | "
        f"{_mark(loses['passed'])} | "
        + (
            f"{BASELINE} graded above the weak answer (no order): {_ci(loses['weak_first'])}"
            if graded
            else f"{BASELINE} preferred with the weak answer shown first "
            f"(A): {_ci(loses['weak_first'])}; shown second (B): {_ci(loses['reference_first'])}"
        )
        + (
            f"; {loses['failed']} pairs failed (counted as not preferred)"
            if loses["failed"]
            else ""
        )
        + " |",
        f"| known order: {moa} > {lite} > 50% vs {BASELINE} | "
        + (
            "not run | the judging stopped once the first criterion had failed |"
            if stopped
            else f"{_mark(order['passed'])} | {moa} {_ci(order[moa])}; {lite} "
            f"{_ci(order[lite])}; intervals "
            + ("separate" if order["cis_separate"] else "overlap")
            + " |"
        ),
        "| position consistency (informational) | – | "
        + (
            "does not apply: each answer is graded alone |"
            if graded
            else f"{_ci(consistency['rate'])} of all pairs: "
            + "; ".join(
                f"{COMPARISONS.get(k) or weak['spec']} {_ci(v)}"
                for k, v in consistency["by_comparison"].items()
            )
            + " |"
        ),
        "",
        "## How to read this",
        "",
        (
            "- Protocol `graded`: each answer is graded alone (1–10, `judge_single` prompt) by "
            "the judge exactly as `moa eval --judge-protocol graded` runs it (same "
            "configuration, prompt and call cache); the higher grade wins. Equal grades are a "
            "tie: a miss for the weak-answer check, half a win for the known order."
            if graded
            else "- Each pair is judged twice, with the two outputs swapped, by the judge exactly "
            "as `moa eval` runs it (same configuration, `judge_pairwise` prompt and call cache)."
        ),
        "- The weak answer loses: a judge that cannot prefer a strong reference to a tiny "
        "model's answer, in either position, cannot rank systems. Unparsed verdicts and failed "
        "calls count against the judge.",
        "- Known order: AlpacaEval 2.0 ranks Together-MoA above Together-MoA-Lite and both above "
        "gpt4_1106_preview; a win counts 1, a split between the two orders 0.5. Pairs without "
        "any verdict are left out" + _unjudged(order["unjudged"]) + ".",
        "- Position consistency: the share of pairs whose two orders named the same winner; "
        "a judge that always picks the first (or second) position scores 0%.",
        "- `judge-validation.json` holds the judge's key: `moa eval --judge-validation FILE` "
        "accepts it only for a judge with the same key.",
    ]
    return "\n".join(lines) + "\n"


def _stopped(stopped: Mapping[str, Any], items: int, graded: bool = False) -> str:
    """The report's account of an early stop (``--stop-early``)."""
    shown = ("the weak answer", "the reference")[int(stopped["order"])]
    how = "" if graded else f", with {shown} shown first"
    return (
        f", and it could not have: after {stopped['judged']} of them{how}, "
        f"{BASELINE} had already failed to win {stopped['misses']} times, more than "
        f"the {stopped['allowed']} misses that {THRESHOLD:.0f}% of {items} allows. The "
        "remaining comparisons were not run (`--stop-early`), so every figure below covers "
        "the pairs judged until then."
    )


def _unjudged(counts: dict[str, int]) -> str:
    """`` (Together-MoA-Lite: 1 pair)`` for the comparisons that lost pairs; '' for none."""
    names = {"moa": "Together-MoA", "moa_lite": "Together-MoA-Lite"}
    parts = [
        f"{names.get(key, key)}: {n} pair{'s' if n != 1 else ''}" for key, n in counts.items() if n
    ]
    return f" ({', '.join(parts)})" if parts else ""
