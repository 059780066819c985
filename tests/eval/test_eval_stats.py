"""Intervals, win rates, the length-controlled win rate and Pareto fronts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from moa.eval.stats import (
    length_controlled_win_rate,
    mcnemar_exact,
    mean_ci,
    paired_difference,
    pareto_front,
    percentile,
    wilson_interval,
    win_rate,
)


def _synthetic(intercept: float, slope: float, shift: float, n: int = 20000, seed: int = 0):
    """Preferences drawn from P(win) = sigmoid(intercept + slope * tanh(Δ / sd(Δ)))."""
    rng = np.random.default_rng(seed)
    reference = rng.uniform(200, 1200, n)
    output = reference + rng.normal(shift, 400, n)
    diff = output - reference
    p = 1 / (1 + np.exp(-(intercept + slope * np.tanh(diff / diff.std()))))
    wins = (rng.random(n) < p).astype(float)
    return wins, output, reference


def test_length_controlled_win_rate_removes_a_pure_length_effect() -> None:
    # The judge only rewards length; the outputs are longer than the reference.
    wins, output, reference = _synthetic(intercept=0.0, slope=2.0, shift=300)
    raw, _ = win_rate(wins.tolist())
    lc = length_controlled_win_rate(wins.tolist(), output.tolist(), reference.tolist())
    assert raw > 65
    assert lc.win_rate == pytest.approx(50, abs=3)
    assert lc.length_slope == pytest.approx(2.0, abs=0.3)


def test_length_controlled_win_rate_recovers_a_real_advantage() -> None:
    intercept = math.log(0.7 / 0.3)  # 70% at equal length
    wins, output, reference = _synthetic(intercept=intercept, slope=1.0, shift=-200)
    lc = length_controlled_win_rate(wins.tolist(), output.tolist(), reference.tolist())
    assert lc.win_rate == pytest.approx(70, abs=3)
    assert 0 < lc.se < 3


def test_length_controlled_win_rate_accepts_ties() -> None:
    prefs = [0.5] * 50
    lc = length_controlled_win_rate(prefs, [100.0] * 50, [100.0] * 50, resamples=10)
    assert lc.win_rate == pytest.approx(50, abs=0.1)


def test_win_rate_and_standard_error() -> None:
    rate, se = win_rate([1, 0, 1, 1])
    assert rate == 75
    assert se == pytest.approx(np.std([1, 0, 1, 1], ddof=1) / 2 * 100)


def test_wilson_interval_stays_inside_zero_and_one() -> None:
    low, high = wilson_interval(0, 10)
    assert low == 0 and 0.2 < high < 0.35
    low, high = wilson_interval(10, 10)
    assert high == pytest.approx(1) and 0.65 < low < 0.8


def test_mean_ci_uses_wilson_for_accuracies_and_bootstrap_otherwise() -> None:
    accuracy = mean_ci([1, 0, 1, 0])
    assert (accuracy.low, accuracy.high) == pytest.approx(wilson_interval(2, 4))
    ratings = mean_ci([7.0, 8.0, 6.5, 9.0, 7.5])
    assert ratings.low < ratings.mean < ratings.high
    assert mean_ci([]).n == 0


def test_paired_difference() -> None:
    diff = paired_difference([1, 1, 1, 0], [0, 1, 0, 0])
    assert diff.mean == 0.5 and diff.n == 4
    assert diff.low <= 0.5 <= diff.high


def test_mcnemar_exact() -> None:
    # 21 discordant items split 7/14: P(X <= 7 | Bin(21, 1/2)) doubled.
    assert mcnemar_exact(7, 14) == pytest.approx(2 * 198440 / 2**21)
    assert mcnemar_exact(14, 7) == mcnemar_exact(7, 14)
    assert mcnemar_exact(3, 0) == pytest.approx(0.25)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(5, 5) == 1.0


def test_pareto_front() -> None:
    points = [(1.0, 50.0), (2.0, 60.0), (3.0, 55.0), (0.5, 10.0), (2.0, 40.0)]
    assert pareto_front(points) == [3, 0, 1]


def test_percentile() -> None:
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert math.isnan(percentile([], 50))
