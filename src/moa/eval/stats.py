"""Statistics of a run: intervals, win rates, the length-controlled win rate, Pareto fronts.

Only numpy. Accuracies (0/1 scores) get a Wilson interval, other means a
percentile bootstrap with a fixed seed, so a report is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Estimate",
    "LengthControlled",
    "bootstrap_ci",
    "length_controlled_win_rate",
    "mcnemar_exact",
    "mean_ci",
    "paired_difference",
    "pareto_front",
    "percentile",
    "wilson_interval",
    "win_rate",
]

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95% interval over ``n`` values."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def scaled(self, factor: float) -> Estimate:
        return Estimate(self.mean * factor, self.low * factor, self.high * factor, self.n)

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (sensible even at 0% or 100%)."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # Rounding must not leave the observed proportion outside its own interval.
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


def bootstrap_ci(
    values: Sequence[float], *, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return (float(low), float(high))


def mean_ci(values: Sequence[float], *, seed: int = 0) -> Estimate:
    """Mean and 95% interval: Wilson for 0/1 values, bootstrap otherwise."""
    data = [float(v) for v in values]
    n = len(data)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = sum(data) / n
    if all(v in (0.0, 1.0) for v in data):
        low, high = wilson_interval(sum(data), n)
    else:
        low, high = bootstrap_ci(data, seed=seed)
    return Estimate(mean, low, high, n)


def win_rate(preferences: Sequence[float]) -> tuple[float, float]:
    """Win rate in percent (ties count half) and its standard error."""
    data = np.asarray(preferences, dtype=float)
    if data.size == 0:
        return (math.nan, math.nan)
    se = float(data.std(ddof=1) / math.sqrt(data.size)) if data.size > 1 else math.nan
    return (float(data.mean()) * 100, se * 100)


@dataclass(frozen=True)
class LengthControlled:
    """A win rate with the effect of output length regressed out."""

    win_rate: float
    """Predicted win rate (percent) when the output is as long as the reference."""
    se: float
    intercept: float
    length_slope: float


def _sigmoid(x: NDArray[np.float64]) -> NDArray[np.float64]:
    result: NDArray[np.float64] = 1.0 / (1.0 + np.exp(-x))
    return result


def _fit_logistic(
    features: NDArray[np.float64], targets: NDArray[np.float64], ridge: float = 1e-3
) -> NDArray[np.float64]:
    """Logistic regression by Newton's method; ``targets`` may be fractional (ties = 0.5)."""
    weights = np.zeros(features.shape[1])
    penalty = np.full(features.shape[1], ridge)
    penalty[0] = 0.0  # the intercept is the quantity reported: leave it unshrunk
    for _ in range(100):
        p = _sigmoid(features @ weights)
        gradient = features.T @ (p - targets) + penalty * weights
        hessian = (features * (p * (1 - p))[:, None]).T @ features + np.diag(penalty) + 1e-9
        step = np.linalg.solve(hessian, gradient)
        weights = weights - step
        if float(np.max(np.abs(step))) < 1e-10:
            break
    return weights


def _length_feature(length_diff: NDArray[np.float64]) -> NDArray[np.float64]:
    # Scaled and squashed like AlpacaEval 2.0 does, so a few very long outputs
    # cannot dominate the fit.
    scale = float(length_diff.std()) or 1.0
    return np.tanh(length_diff / scale)


def length_controlled_win_rate(
    preferences: Sequence[float],
    output_lengths: Sequence[float],
    reference_lengths: Sequence[float],
    *,
    resamples: int = 200,
    seed: int = 0,
) -> LengthControlled:
    """Regress the preference on the length difference; report the win rate at zero difference.

    ``preferences`` are 1 (output wins), 0 (reference wins) or 0.5 (split). The
    model is ``P(win) = sigmoid(a + b * tanh(Δlen / sd(Δlen)))``; the result is
    ``sigmoid(a)``: how often the output would win if it were exactly as long
    as the reference. The standard error comes from a bootstrap over items.
    """
    targets = np.asarray(preferences, dtype=float)
    diff = np.asarray(output_lengths, dtype=float) - np.asarray(reference_lengths, dtype=float)
    if targets.size == 0:
        return LengthControlled(math.nan, math.nan, math.nan, math.nan)
    features = np.column_stack([np.ones_like(diff), _length_feature(diff)])
    weights = _fit_logistic(features, targets)
    rng = np.random.default_rng(seed)
    estimates = []
    for _ in range(resamples if targets.size > 1 else 0):
        index = rng.integers(0, targets.size, size=targets.size)
        sample = np.column_stack([np.ones(targets.size), _length_feature(diff[index])])
        estimates.append(float(_sigmoid(_fit_logistic(sample, targets[index])[:1])[0]))
    se = float(np.std(estimates, ddof=1)) * 100 if len(estimates) > 1 else math.nan
    lc = float(_sigmoid(weights[:1])[0]) * 100
    return LengthControlled(lc, se, float(weights[0]), float(weights[1]))


def paired_difference(
    a: Sequence[float], b: Sequence[float], *, resamples: int = 2000, seed: int = 0
) -> Estimate:
    """Mean of ``a - b`` over paired items, with a bootstrap 95% interval."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if diff.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    low, high = bootstrap_ci(diff.tolist(), resamples=resamples, seed=seed)
    return Estimate(float(diff.mean()), low, high, int(diff.size))


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts of two paired systems.

    ``only_a``: items only the first system got right; ``only_b``: only the second.
    Under no difference each discordant item is a fair coin.
    """
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / (1 << n))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100), NaN when there are no values."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else math.nan


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower or equal x *and* higher or equal y.

    x is a cost (lower is better), y a quality (higher is better); the result is
    sorted by increasing x, which is the order to draw the front in.
    """
    front = []
    for i, (x, y) in enumerate(points):
        if math.isnan(x) or math.isnan(y):
            continue
        dominated = any(
            (ox <= x and oy >= y) and (ox < x or oy > y)
            for j, (ox, oy) in enumerate(points)
            if j != i and not (math.isnan(ox) or math.isnan(oy))
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))
